module github.com/berthhq/berth/agent

go 1.26.7

replace github.com/berthhq/berth/gen => ../gen
