package client

import (
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
)

// gRPC takes each message's buffer from the next tier up of its pool and
// clears the whole buffer first. Its default tiers jump from 32 KB to 1 MB,
// and a metrics batch of a few hundred samples is 40-60 KB: every replayed
// batch cost a 1 MB clear (or, with the pool emptied at each GC, a fresh
// megabyte of page faults). Finer tiers keep a buffer within twice its
// message. The controller sets the same (grpcapi).
func init() {
	pool, err := mem.NewBinaryTieredBufferPool(8, 12, 14, 15, 16, 17, 18, 19, 20, 21, 22)
	if err != nil {
		panic(err)
	}
	experimental.SetDefaultBufferPool(pool)
}
