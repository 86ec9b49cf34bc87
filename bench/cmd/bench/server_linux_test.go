package main

import (
	"bufio"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServerDiesWithTheBench starts a bench-like process (this test
// binary, as a child) that starts a "server" (sleep) with serverCommand,
// then kills it with SIGKILL, which, like a worker's panic, runs none of
// its defers: the server must end with it, not live on under PID 1.
func TestServerDiesWithTheBench(t *testing.T) {
	if os.Getenv("BENCH_TEST_SERVER_PARENT") == "1" {
		cmd := serverCommand("sleep", "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		os.Stdout.WriteString("server " + strconv.Itoa(cmd.Process.Pid) + "\n")
		time.Sleep(time.Minute)
		return
	}
	parent := exec.Command(os.Args[0], "-test.run=^TestServerDiesWithTheBench$", "-test.count=1")
	parent.Env = append(os.Environ(), "BENCH_TEST_SERVER_PARENT=1")
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	pid := 0
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "server "); ok {
			pid, _ = strconv.Atoi(v)
			break
		}
	}
	parent.Process.Kill()
	parent.Wait()
	if pid == 0 {
		t.Fatal("the child printed no server pid")
	}
	// alive: the process exists and is not a zombie waiting for a reaper.
	alive := func() bool {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return false
		}
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		return len(f) > 0 && f[0] != "Z"
	}
	for deadline := time.Now().Add(5 * time.Second); alive() && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if alive() {
		syscall.Kill(pid, syscall.SIGKILL)
		t.Fatalf("server %d outlived its killed parent", pid)
	}
}
