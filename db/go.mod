module github.com/berthhq/berth/db

go 1.26.7
