//go:build unix

package main

import (
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/c360dev/c360/internal/logbuf"
)

// The first SIGTERM starts the shutdown (here a minute of
// C360_SHUTDOWN_DELAY); a second kills the process at once, as it would
// without the graceful shutdown's handler, instead of being swallowed.
func TestSecondSignalKillsServe(t *testing.T) {
	c := newCLI(t)
	bin := filepath.Join(t.TempDir(), "c360")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	addr := freeAddr(t)
	cmd := exec.Command(bin, "serve", "--no-migrate")
	var stderr logbuf.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.Env = append(os.Environ(), "DATABASE_URL="+c.env["DATABASE_URL"], "C360_ADDR="+addr, "C360_SHUTDOWN_DELAY=1m")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// done gives Wait's error, then is closed: the deferred kill sees the
	// process ended whoever received that error.
	done := make(chan error, 1)
	go func() {
		done <- cmd.Wait()
		close(done)
	}()
	defer func() {
		select {
		case <-done:
		default:
			cmd.Process.Kill()
			<-done
		}
	}()
	base := "http://" + addr
	waitHealthy(t, base, done, &stderr)

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: time.Second}
	waitFor(t, "the shutdown delay", func() bool {
		status, _ := get(client, base+"/readyz")
		return status == http.StatusServiceUnavailable
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			t.Fatalf("serve ended with %v after the second SIGTERM, want it killed by it", err)
		}
		if ws, ok := exit.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
			t.Errorf("serve ended with %v after the second SIGTERM, want it killed by SIGTERM", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("serve still running 5 s after a second SIGTERM during its shutdown delay\nstderr: %s", stderr.String())
	}
}
