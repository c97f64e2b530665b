package identity

import (
	"net"
	"time"
)

func newNetDialer(timeout time.Duration) *net.Dialer { return &net.Dialer{Timeout: timeout} }
