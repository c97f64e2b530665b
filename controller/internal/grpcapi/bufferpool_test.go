package grpcapi

import (
	"testing"

	"google.golang.org/grpc/mem"
)

func TestBufferPoolTiers(t *testing.T) {
	for _, n := range []int{50 << 10, 100 << 10, 300 << 10} {
		b := mem.DefaultBufferPool().Get(n)
		if len(*b) != n || cap(*b) > 2*n {
			t.Fatalf("a %d-byte message gets a %d-byte buffer", n, cap(*b))
		}
		mem.DefaultBufferPool().Put(b)
	}
}
