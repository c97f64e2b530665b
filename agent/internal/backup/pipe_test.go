package backup

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"testing"
)

// The pipe hands every byte on in order, and its end is the writer's word:
// an error, never an end of file, when the writer failed.
func TestBufPipe(t *testing.T) {
	data := make([]byte, 1<<20+123)
	rand.Read(data)
	for _, werr := range []error{nil, errors.New("dump failed")} {
		p := newBufPipe()
		go func() {
			for b := data; len(b) > 0; {
				n := min(len(b), 7777)
				if _, err := p.Write(b[:n]); err != nil {
					t.Error(err)
					return
				}
				b = b[n:]
			}
			p.CloseWrite(werr)
		}()
		got, err := io.ReadAll(p)
		if !bytes.Equal(got, data) {
			t.Fatalf("read %d bytes, want the %d written", len(got), len(data))
		}
		if err != werr { // ReadAll turns io.EOF into nil
			t.Fatalf("end of stream: %v, want %v", err, werr)
		}
	}
	// The reader gives up: the blocked writer fails with its reason.
	p := newBufPipe()
	gone := errors.New("upload gone")
	done := make(chan error, 1)
	go func() {
		_, err := p.Write(make([]byte, 10*pipeChunks*pipeChunkSize))
		done <- err
	}()
	buf := make([]byte, 1000)
	if _, err := p.Read(buf); err != nil {
		t.Fatal(err)
	}
	p.CloseRead(gone)
	if err := <-done; !errors.Is(err, gone) {
		t.Fatalf("writer after the reader closed: %v", err)
	}
}
