// Package faults holds c360's fault-injection tests (make test-faults): they
// build the c360 binary, run it as separate processes against a throwaway
// PostgreSQL cluster of their own, and kill, restart, flood and poison them
// to show that nothing acknowledged is ever lost (docs/operations.md).
//
// This file is the throwaway cluster. PostgreSQL refuses to run as root, so
// as root the cluster runs as the unprivileged system user c360pg (the one
// scripts/pg.sh uses; created when missing).
package faults

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// SystemUser runs the cluster when the tests run as root.
const SystemUser = "c360pg"

// Cluster is a throwaway PostgreSQL cluster: its own data directory and
// unix socket directory under a temporary directory, listening on a free
// port of 127.0.0.1, with trust authentication for the superuser c360.
type Cluster struct {
	// Dir holds data/ (PGDATA), sock/ and server.log.
	Dir string
	// Port is the TCP port on 127.0.0.1.
	Port int

	bindir string
	owner  *user.User // nil: the current user runs the server
}

// StartCluster creates and starts a cluster for the test, and stops and
// removes it (killing what is left of it) when the test ends. It fails the
// test, with what to do, when no PostgreSQL server binaries are installed.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	c, err := NewCluster()
	if err != nil {
		t.Fatalf("throwaway PostgreSQL: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Remove(); err != nil {
			t.Errorf("remove throwaway PostgreSQL: %v", err)
		}
	})
	if err := c.Start(); err != nil {
		t.Fatalf("start throwaway PostgreSQL: %v\n%s", err, c.LogTail(4096))
	}
	return c
}

// NewCluster runs initdb into a new temporary directory. The caller starts
// the cluster and removes it.
func NewCluster() (*Cluster, error) {
	bindir, err := BinDir()
	if err != nil {
		return nil, err
	}
	c := &Cluster{bindir: bindir}
	if os.Geteuid() == 0 {
		if c.owner, err = systemUser(); err != nil {
			return nil, err
		}
	}
	if c.Port, err = FreePort(); err != nil {
		return nil, err
	}
	// Under os.TempDir (not t.TempDir, whose parents are private to the
	// test's user): the server's user must reach it, and the socket path
	// must stay under 107 bytes.
	if c.Dir, err = os.MkdirTemp("", dirPrefix); err != nil {
		return nil, fmt.Errorf("temporary directory: %w", err)
	}
	live.Store(c, struct{}{})
	// Sweep removes the cluster if this process dies before removing it.
	if err := os.WriteFile(filepath.Join(c.Dir, OwnerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		c.Remove()
		return nil, fmt.Errorf("write %s: %w", OwnerFile, err)
	}
	if err := c.chown(c.Dir); err != nil {
		c.Remove()
		return nil, err
	}
	if err := os.Mkdir(c.sockDir(), 0o755); err != nil {
		c.Remove()
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	if err := c.chown(c.sockDir()); err != nil {
		c.Remove()
		return nil, err
	}
	if out, err := c.run("initdb", "-D", c.dataDir(), "-U", "c360", "-A", "trust", "-E", "UTF8", "--no-locale",
		"--no-sync", "--no-instructions"); err != nil {
		c.Remove()
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	conf := fmt.Sprintf(`
# faults: a throwaway cluster for fault-injection tests.
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%s'
max_connections = 100
shared_buffers = 32MB
# Durability as in production: a commit is flushed before it is acknowledged.
fsync = on
synchronous_commit = on
log_min_messages = warning
`, c.Port, c.sockDir())
	f, err := os.OpenFile(filepath.Join(c.dataDir(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteString(conf)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		c.Remove()
		return nil, fmt.Errorf("write postgresql.conf: %w", err)
	}
	return c, nil
}

// URL returns the connection URL of database db as the superuser c360.
func (c *Cluster) URL(db string) string {
	return fmt.Sprintf("postgres://c360@127.0.0.1:%d/%s?sslmode=disable", c.Port, db)
}

// Start starts the server and waits until it accepts connections.
func (c *Cluster) Start() error {
	if out, err := c.run("pg_ctl", "-D", c.dataDir(), "-l", c.logFile(), "-w", "-t", "30", "start"); err != nil {
		return fmt.Errorf("pg_ctl start: %w\n%s", err, out)
	}
	return nil
}

// Stop stops the server with pg_ctl's mode: "smart", "fast" (disconnect
// every client, then shut down cleanly) or "immediate" (abort, as a crash
// would: the next start recovers from the WAL).
func (c *Cluster) Stop(mode string) error {
	if out, err := c.run("pg_ctl", "-D", c.dataDir(), "-m", mode, "-w", "-t", "30", "stop"); err != nil {
		return fmt.Errorf("pg_ctl stop -m %s: %w\n%s", mode, err, out)
	}
	return nil
}

// Restart stops the server in mode and starts it again.
func (c *Cluster) Restart(mode string) error {
	if err := c.Stop(mode); err != nil {
		return err
	}
	return c.Start()
}

// Kill sends SIGKILL to the postmaster and to every process it started, as
// an out-of-memory killer would. It is a no-op when the server is not
// running.
func (c *Cluster) Kill() error {
	pid, err := c.postmasterPID()
	if err != nil {
		return nil
	}
	children := childrenOf(pid)
	err = syscall.Kill(pid, syscall.SIGKILL)
	for _, p := range children {
		syscall.Kill(p, syscall.SIGKILL)
	}
	if err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill postmaster %d: %w", pid, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range append(children, pid) {
		for alive(p) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

// alive reports whether process pid still runs: a zombie, dead but not yet
// reaped by its new parent, does not.
func alive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return syscall.Kill(pid, 0) == nil // no procfs: best effort
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// Remove stops the server (immediately; killing it if pg_ctl cannot) and
// deletes the cluster's directory.
func (c *Cluster) Remove() error {
	var errs []error
	if c.Dir == "" {
		return nil
	}
	defer live.Delete(c)
	if _, err := c.postmasterPID(); err == nil {
		if err := c.Stop("immediate"); err != nil {
			errs = append(errs, err, c.Kill())
		}
	}
	if err := os.RemoveAll(c.Dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", c.Dir, err))
	}
	return errors.Join(errs...)
}

// dirPrefix names the temporary directories of clusters; OwnerFile in one
// holds the pid of the process that made it.
const dirPrefix = "c360-faults-pg-"

// OwnerFile, in a temporary directory named c360-faults-*, holds the pid of
// the process that made it; Sweep removes the directory once that process
// is gone.
const OwnerFile = "owner.pid"

// live holds the clusters of this process that are not removed yet.
var live sync.Map

// RemoveAll removes every cluster this process started and has not removed
// yet: for a signal handler, when the tests are interrupted before their
// cleanups run.
func RemoveAll() {
	live.Range(func(k, _ any) bool {
		k.(*Cluster).Remove()
		return true
	})
}

// Sweep kills and removes the clusters (and other temporary directories
// named c360-faults-* with an owner.pid) left behind by test processes that
// died before their cleanups ran (kill -9, the OOM killer): those whose
// owner process no longer exists.
func Sweep() error {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "c360-faults-*"))
	var errs []error
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, OwnerFile))
		if err != nil {
			continue // being created, or not ours
		}
		owner, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || alive(owner) {
			continue
		}
		c := &Cluster{Dir: dir}
		if err := c.Kill(); err != nil {
			errs = append(errs, err)
		}
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
		}
	}
	return errors.Join(errs...)
}

// LogTail returns the last n bytes of the server's log, for failure messages.
func (c *Cluster) LogTail(n int) string {
	b, err := os.ReadFile(c.logFile())
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func (c *Cluster) dataDir() string { return filepath.Join(c.Dir, "data") }
func (c *Cluster) sockDir() string { return filepath.Join(c.Dir, "sock") }
func (c *Cluster) logFile() string { return filepath.Join(c.Dir, "server.log") }

// run runs a PostgreSQL program as the cluster's owner, from "/" so that a
// working directory the owner cannot enter does not bother it.
func (c *Cluster) run(prog string, args ...string) ([]byte, error) {
	path := filepath.Join(c.bindir, prog)
	var cmd *exec.Cmd
	if c.owner != nil {
		cmd = exec.Command("runuser", append([]string{"-u", c.owner.Username, "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	cmd.Dir = "/"
	// pg_ctl's server outlives the command: it must not hold our pipes.
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	return out.Bytes(), err
}

func (c *Cluster) chown(path string) error {
	if c.owner == nil {
		return nil
	}
	uid, _ := strconv.Atoi(c.owner.Uid)
	gid, _ := strconv.Atoi(c.owner.Gid)
	if err := os.Chown(path, uid, gid); err != nil {
		return fmt.Errorf("chown %s to %s: %w", path, c.owner.Username, err)
	}
	return nil
}

func (c *Cluster) postmasterPID() (int, error) {
	b, err := os.ReadFile(filepath.Join(c.dataDir(), "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("postmaster.pid: %q", line)
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return 0, fmt.Errorf("postmaster %d: %w", pid, err)
	}
	return pid, nil
}

// childrenOf lists the processes whose parent is pid (Linux /proc).
func childrenOf(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		rest := string(b[bytes.LastIndexByte(b, ')')+1:])
		f := strings.Fields(rest)
		if len(f) > 1 {
			if ppid, _ := strconv.Atoi(f[1]); ppid == pid {
				out = append(out, p)
			}
		}
	}
	return out
}

// BinDir finds the PostgreSQL server binaries: pg_config --bindir, else the
// highest /usr/lib/postgresql/*/bin, else initdb on PATH.
func BinDir() (string, error) {
	ok := func(d string) bool {
		for _, p := range []string{"initdb", "pg_ctl", "postgres"} {
			if fi, err := os.Stat(filepath.Join(d, p)); err != nil || fi.Mode()&0o111 == 0 {
				return false
			}
		}
		return true
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if d := strings.TrimSpace(string(out)); ok(d) {
			return d, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return versionOf(b) - versionOf(a) })
	for _, d := range dirs {
		if ok(d) {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil && ok(filepath.Dir(real)) {
			return filepath.Dir(real), nil
		}
		if ok(filepath.Dir(p)) {
			return filepath.Dir(p), nil
		}
	}
	return "", errors.New("no PostgreSQL server binaries (initdb, pg_ctl, postgres) found via pg_config, in /usr/lib/postgresql/*/bin or on PATH: " +
		"run `make test-faults` (which installs them with scripts/pg.sh) or install PostgreSQL (apt-get install postgresql)")
}

// versionOf returns N of /usr/lib/postgresql/N/bin.
func versionOf(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

// systemUser returns the unprivileged user that runs the cluster for root,
// creating it as scripts/pg.sh does when it is missing.
func systemUser() (*user.User, error) {
	u, err := user.Lookup(SystemUser)
	if err == nil {
		return u, nil
	}
	out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SystemUser).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL will not run as root, and creating the user %s failed: %w\n%s", SystemUser, err, out)
	}
	return user.Lookup(SystemUser)
}

// FreePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
