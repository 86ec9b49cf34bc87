package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/c360dev/c360/internal/logbuf"
	"github.com/c360dev/c360/internal/pgtest"
)

// replica is one `c360 serve` process.
type replica struct {
	cmd  *exec.Cmd
	base string
	log  *logbuf.Buffer
}

// buildC360 builds the server binary once per test binary.
var buildC360 = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "c360-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "c360")
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	out, err := exec.Command(goBin, "build", "-o", bin, "github.com/c360dev/c360/cmd/c360").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

func startReplica(t *testing.T, bin, dbURL string) *replica {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	r := &replica{base: "http://" + addr, log: &logbuf.Buffer{}}
	r.cmd = exec.Command(bin, "serve", "--no-migrate")
	r.cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "C360_ADDR="+addr, "C360_SHUTDOWN_TIMEOUT=5s")
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- r.cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			r.cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("replica %s log:\n%s", addr, r.log.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(r.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica not ready:\n%s", r.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// identify records an identify call through the replica's GraphQL API.
func (r *replica) identify(t *testing.T, key, addr string, traits map[string]any) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{
		"query": `mutation($i: IdentifyInput!) { identify(input: $i) { id version } }`,
		"variables": map[string]any{"i": map[string]any{
			"identities": []map[string]any{{"type": "email", "value": addr}}, "traits": traits}},
	})
	req, _ := http.NewRequest(http.MethodPost, r.base+"/graphql", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Data struct {
			Identify struct{ ID string } `json:"identify"`
		} `json:"data"`
		Errors []any `json:"errors"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || len(out.Errors) > 0 || out.Data.Identify.ID == "" {
		t.Fatalf("identify: %v %+v", err, out)
	}
	return out.Data.Identify.ID
}

// Two `c360 serve` processes on one database: a subscriber on one receives
// every change written through the other, in order, by way of the batched
// NOTIFY and the other replica's listener.
func TestTwoServerProcesses(t *testing.T) {
	bin, err := buildC360()
	if err != nil {
		t.Fatal(err)
	}
	db := pgtest.Open(t)
	_, _, key := pgtest.Workspace(t, db)
	url := pgtest.URL(t)
	a, b := startReplica(t, bin, url), startReplica(t, bin, url)

	id := b.identify(t, key, "rita@example.com", map[string]any{"n": 0})
	wsA := "ws" + strings.TrimPrefix(a.base, "http") + "/graphql"
	wsB := "ws" + strings.TrimPrefix(b.base, "http") + "/graphql"
	onA := dialWS(t, wsA, "graphql-transport-ws", nil)
	onA.init(key)
	// From the creation on, so no change can slip between subscribe and write.
	onA.subscribe("s", subCustomer, map[string]any{"id": id, "after": hubCursor(mustInt(t, id), 1)})
	onA.subscribe("all", `subscription { customerChanges { customerId version } }`, nil)
	onB := dialWS(t, wsB, "graphql-transport-ws", nil)
	onB.init(key)
	onB.subscribe("s", subCustomer, map[string]any{"id": id, "after": hubCursor(mustInt(t, id), 1)})

	// Writes through b, then through a: each replica's subscriber sees all.
	const n = 30
	for i := 1; i <= n; i++ {
		w := b
		if i > n/2 {
			w = a
		}
		w.identify(t, key, "rita@example.com", map[string]any{"n": i})
	}
	for v := int64(2); v <= n+1; v++ {
		if got := onB.nextChange("s"); got.Version != v || got.CustomerID != id {
			t.Fatalf("on b: got %s v%d, want %s v%d", got.CustomerID, got.Version, id, v)
		}
	}
	// On a, the customer stream sees every version; the workspace stream,
	// which started live, a suffix of them in order, ending with the last.
	want, last := int64(2), int64(0)
	for want <= n+1 || last < n+1 {
		m := onA.read()
		var p struct {
			Data map[string]change `json:"data"`
		}
		if m.Type != "next" || json.Unmarshal(m.Payload, &p) != nil {
			t.Fatalf("on a: got %s %s", m.Type, m.Payload)
		}
		switch m.ID {
		case "s":
			if got := p.Data["customerChanged"]; got.Version != want || got.CustomerID != id {
				t.Fatalf("on a: got %s v%d, want %s v%d", got.CustomerID, got.Version, id, want)
			}
			want++
		case "all":
			got := p.Data["customerChanges"]
			if got.Version <= last {
				t.Fatalf("workspace stream went from v%d to v%d", last, got.Version)
			}
			last = got.Version
		}
	}
}

func mustInt(t *testing.T, s string) int64 {
	t.Helper()
	var n int64
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}
