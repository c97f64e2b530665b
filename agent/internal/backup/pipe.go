package backup

import (
	"io"
	"sync"
)

// bufPipe connects two stages of the stream like io.Pipe (either side can
// close with an error the other then sees), but with room for a few chunks
// in flight, as a kernel pipe has between the processes of a shell
// pipeline: a stage that is briefly descheduled does not stall the others.
// Memory: chunks x chunkSize, allocated up front.
type bufPipe struct {
	ch    chan []byte
	free  chan []byte
	done  chan struct{} // closed when the reader gives up
	once  sync.Once
	mu    sync.Mutex
	werr  error // the writer's close: io.EOF when clean
	rerr  error // the reader's close
	cur   []byte
	chunk []byte // the buffer cur is a part of
}

const (
	pipeChunks    = 4
	pipeChunkSize = 64 << 10
)

func newBufPipe() *bufPipe {
	p := &bufPipe{ch: make(chan []byte, pipeChunks), free: make(chan []byte, pipeChunks), done: make(chan struct{})}
	for range pipeChunks {
		p.free <- make([]byte, pipeChunkSize)
	}
	return p
}

func (p *bufPipe) readerErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rerr == nil {
		return io.ErrClosedPipe
	}
	return p.rerr
}

// Write copies b into chunks and queues them; it blocks while all chunks are
// in flight, and fails once the reader has closed.
func (p *bufPipe) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		var buf []byte
		select {
		case buf = <-p.free:
		case <-p.done:
			return n, p.readerErr()
		}
		c := copy(buf[:cap(buf)], b)
		select {
		case p.ch <- buf[:c]:
		case <-p.done:
			return n, p.readerErr()
		}
		n += c
		b = b[c:]
	}
	return n, nil
}

// CloseWrite ends the stream: the reader sees err, or io.EOF for nil. Call
// it once.
func (p *bufPipe) CloseWrite(err error) {
	if err == nil {
		err = io.EOF
	}
	p.mu.Lock()
	p.werr = err
	p.mu.Unlock()
	close(p.ch)
}

func (p *bufPipe) Read(b []byte) (int, error) {
	if len(p.cur) == 0 {
		if p.chunk != nil {
			p.free <- p.chunk[:cap(p.chunk)]
			p.chunk = nil
		}
		select {
		case c, ok := <-p.ch:
			if !ok {
				p.mu.Lock()
				defer p.mu.Unlock()
				return 0, p.werr
			}
			p.cur, p.chunk = c, c
		case <-p.done:
			return 0, io.ErrClosedPipe
		}
	}
	n := copy(b, p.cur)
	p.cur = p.cur[n:]
	return n, nil
}

// CloseRead gives up reading: the writer's next Write fails with err.
func (p *bufPipe) CloseRead(err error) {
	p.once.Do(func() {
		p.mu.Lock()
		p.rerr = err
		p.mu.Unlock()
		close(p.done)
	})
}
