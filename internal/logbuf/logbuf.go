// Package logbuf holds Buffer, the output tests give a server's loggers
// and child processes: its goroutines write while the test reads.
package logbuf

import (
	"bytes"
	"sync"
)

// Buffer is a bytes.Buffer that many goroutines may write to and read.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
