package store_test

import (
	"testing"

	"github.com/berthhq/berth/controller/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }
