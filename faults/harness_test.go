package faults

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/c360dev/c360/internal/logbuf"
	"github.com/jackc/pgx/v5"
)

// c360Bin is the c360 binary TestMain builds.
var c360Bin string

func TestMain(m *testing.M) {
	fail := func(args ...any) {
		fmt.Fprintln(os.Stderr, append([]any{"faults:"}, args...)...)
		os.Exit(1)
	}
	if _, err := BinDir(); err != nil {
		fail(err)
	}
	if err := Sweep(); err != nil {
		fmt.Fprintln(os.Stderr, "faults: removing what earlier runs left:", err)
	}
	dir, err := os.MkdirTemp("", "c360-faults-bin-")
	if err != nil {
		fail(err)
	}
	if err := os.WriteFile(filepath.Join(dir, OwnerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		os.RemoveAll(dir)
		fail(err)
	}
	// Interrupted (^C, a CI timeout), the tests' cleanups do not run: remove
	// the clusters here. c360 processes die with us (Pdeathsig).
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		sig := <-sigs
		fmt.Fprintf(os.Stderr, "faults: %v: removing the throwaway clusters\n", sig)
		RemoveAll()
		os.RemoveAll(dir)
		os.Exit(2)
	}()
	c360Bin = filepath.Join(dir, "c360")
	build := exec.Command("go", "build", "-o", c360Bin, "github.com/c360dev/c360/cmd/c360")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	start := time.Now()
	if err := build.Run(); err != nil {
		os.RemoveAll(dir)
		fail("go build ./cmd/c360:", err)
	}
	fmt.Fprintf(os.Stderr, "faults: built c360 in %s\n", time.Since(start).Round(time.Millisecond))
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// publicURL is C360_PUBLIC_URL: what Twilio signs, whatever c360 listens on.
const publicURL = "https://faults.c360.test"

// twilioToken is the workspace's Twilio auth token.
const twilioToken = "faults0123456789abcdef0123456789"

// app is one c360 deployment of a test: a migrated database on the test's
// cluster, a workspace with a Twilio auth token, and the address its server
// processes listen on.
type app struct {
	cluster *Cluster
	dbURL   string
	addr    string
	ws      int64
	slug    string
	apiKey  string
	// writeKey is the workspace's Segment write key.
	writeKey string
}

// newApp creates the database, migrates it with `c360 migrate up` and
// creates the workspace with the CLI, as an operator would.
func newApp(t *testing.T, c *Cluster) *app {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE c360"); err != nil {
		t.Fatalf("create database: %v", err)
	}
	conn.Close(ctx)
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	a := &app{cluster: c, dbURL: c.URL("c360"), addr: "127.0.0.1:" + strconv.Itoa(port), slug: "faults"}
	a.cli(t, "migrate", "up")
	var creds struct {
		ID       int64  `json:"id,string"`
		APIKey   string `json:"apiKey"`
		WriteKey string `json:"writeKey"`
	}
	out := a.cli(t, "workspace", "create", "--slug", a.slug, "--json")
	if err := json.Unmarshal(out, &creds); err != nil {
		t.Fatalf("workspace create --json: %v: %s", err, out)
	}
	a.ws, a.apiKey, a.writeKey = creds.ID, creds.APIKey, creds.WriteKey
	a.cli(t, "workspace", "update", "--slug", a.slug, "--twilio-auth-token", twilioToken)
	return a
}

// cli runs a c360 command against the app's database and returns stdout.
func (a *app) cli(t *testing.T, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(c360Bin, args...)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+a.dbURL)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("c360 %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

// conn opens a direct connection to the app's database as the superuser,
// closed at the end of the test.
func (a *app) conn(t *testing.T) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), a.dbURL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// proc is one `c360 serve` process.
type proc struct {
	t    *testing.T
	app  *app
	cmd  *exec.Cmd
	log  *lockedBuffer
	done chan struct{}
	err  error // the process's exit, once done is closed
}

// serve starts `c360 serve` with env added to the app's settings and waits
// until /readyz answers 200 (/healthz answers already while migrations
// run, before the API is served). The process is killed at the end of the test if
// still running; its log is shown when the test failed.
func (a *app) serve(t *testing.T, env ...string) *proc {
	t.Helper()
	cmd := exec.Command(c360Bin, "serve")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+a.dbURL, "C360_ADDR="+a.addr, "C360_PUBLIC_URL="+publicURL)
	cmd.Env = append(cmd.Env, env...)
	p := &proc{t: t, app: a, cmd: cmd, log: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlives the tests
	if err := cmd.Start(); err != nil {
		t.Fatalf("start c360 serve: %v", err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("c360 serve (pid %d) log: errors, then the last 4 KiB:\n%s\n...\n%s", cmd.Process.Pid, p.log.errors(30), p.log.tail(4<<10))
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		res, err := http.Get(a.base() + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-p.done:
			t.Fatalf("c360 serve exited at start: %v\n%s", p.err, p.log.tail(8<<10))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("c360 serve was not ready (/readyz) within 20s\n%s", p.log.tail(8<<10))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (a *app) base() string { return "http://" + a.addr }

// kill sends SIGKILL and waits for the process to end.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// signal sends sig to the process.
func (p *proc) signal(sig os.Signal) {
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// wait waits up to d for the process to exit and returns its exit code.
func (p *proc) wait(d time.Duration) (int, bool) {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), true
	case <-time.After(d):
		return 0, false
	}
}

// rss returns the process's resident set size and its peak, in bytes.
func (p *proc) rss() (cur, peak int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			cur = kb << 10
		case "VmHWM:":
			peak = kb << 10
		}
	}
	return cur, peak
}

// lockedBuffer collects a process's output.
type lockedBuffer struct{ logbuf.Buffer }

// errors returns the first n log lines of level ERROR.
func (b *lockedBuffer) errors(n int) string {
	var out []string
	for line := range strings.Lines(b.String()) {
		if strings.Contains(line, `"level":"ERROR"`) && len(out) < n {
			out = append(out, line)
		}
	}
	return strings.Join(out, "")
}

func (b *lockedBuffer) tail(n int) string {
	s := b.String()
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return s
}

// sign computes X-Twilio-Signature as Twilio documents it (and as
// connectors/twilio's tests check against twilio-go): HMAC-SHA1 with the
// auth token over the full URL followed by every POST parameter's name and
// value, sorted by name; base64.
func sign(token, fullURL string, form url.Values) string {
	keys := make([]string, 0, len(form))
	for k := range form {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(fullURL)
	for _, k := range keys {
		vs := append([]string(nil), form[k]...)
		sort.Strings(vs)
		for _, v := range vs {
			b.WriteString(k)
			b.WriteString(v)
		}
	}
	mac := hmac.New(sha1.New, []byte(token))
	mac.Write([]byte(b.String()))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// delivery is one Twilio inbound message webhook, as Twilio would post it
// (and post it again).
type delivery struct {
	sid  string
	form url.Values
}

// newDelivery returns the delivery of message i of a test run: a unique
// MessageSid, from one of a few senders so that deliveries share customers.
func newDelivery(run string, i int, body string) delivery {
	sid := fmt.Sprintf("SM%s%08d", run, i)
	from := fmt.Sprintf("+1415555%04d", 1000+i%25)
	f := url.Values{
		"MessageSid": {sid}, "SmsMessageSid": {sid}, "SmsSid": {sid}, "AccountSid": {"AC00000000000000000000000000000001"},
		"From": {from}, "To": {"+14155550199"}, "Body": {body}, "NumMedia": {"0"}, "NumSegments": {"1"},
		"SmsStatus": {"received"}, "ApiVersion": {"2010-04-01"},
	}
	return delivery{sid: sid, form: f}
}

// result is what one delivery attempt got.
type result struct {
	status     int // 0: no HTTP answer (connection refused, reset, timeout)
	retryAfter string
	err        error
	start, end time.Time
}

// deliver posts d to the app's Twilio webhook, signed for publicURL.
func (a *app) deliver(client *http.Client, d delivery) result {
	path := "/webhooks/twilio/" + a.slug
	body := d.form.Encode()
	r := result{start: time.Now()}
	req, err := http.NewRequest(http.MethodPost, a.base()+path, strings.NewReader(body))
	if err != nil {
		r.err, r.end = err, time.Now()
		return r
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", sign(twilioToken, publicURL+path, d.form))
	res, err := client.Do(req)
	r.end = time.Now()
	if err != nil {
		r.err = err
		return r
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	r.status, r.retryAfter = res.StatusCode, res.Header.Get("Retry-After")
	return r
}

// redeliver retries d as Twilio would until it is answered 200, for at
// most 20 s.
func (a *app) redeliver(client *http.Client, d delivery) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := a.deliver(client, d)
		if r.status == http.StatusOK {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redelivery of %s: still %d (%v) after 20s", d.sid, r.status, r.err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// newClient returns an HTTP client with room for many connections and
// Twilio's 15 s timeout.
func newClient(conns int) *http.Client {
	return &http.Client{
		Timeout: 15 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns,
			DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		},
	}
}

// stored counts, per MessageSid, the Twilio events and the messages stored.
func (a *app) stored(t *testing.T) (events, messages map[string]int) {
	t.Helper()
	ctx := context.Background()
	conn := a.conn(t)
	count := func(sql string) map[string]int {
		rows, err := conn.Query(ctx, sql, a.ws)
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		out := map[string]int{}
		for rows.Next() {
			var k string
			var n int
			if err := rows.Scan(&k, &n); err != nil {
				t.Fatal(err)
			}
			out[k] = n
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	return count(`SELECT dedupe_key, count(*) FROM events WHERE workspace_id = $1 AND source = 'twilio' GROUP BY dedupe_key`),
		count(`SELECT provider_id, count(*) FROM messages WHERE workspace_id = $1 GROUP BY provider_id`)
}

// graphql posts a GraphQL operation with the API key and decodes the answer.
func (a *app) graphql(t *testing.T, key, query string, vars map[string]any, out any) []gqlError {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	req, _ := http.NewRequest(http.MethodPost, a.base()+"/graphql", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("graphql: %v", err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var resp struct {
		Data   json.RawMessage `json:"data"`
		Errors []gqlError      `json:"errors"`
	}
	if err := json.Unmarshal(raw, &resp); err != nil {
		t.Fatalf("graphql answer %d %q: %v", res.StatusCode, raw, err)
	}
	if out != nil && len(resp.Data) > 0 && string(resp.Data) != "null" {
		if err := json.Unmarshal(resp.Data, out); err != nil {
			t.Fatalf("graphql data %s: %v", resp.Data, err)
		}
	}
	return resp.Errors
}

type gqlError struct {
	Message    string `json:"message"`
	Extensions struct {
		Code string `json:"code"`
	} `json:"extensions"`
}

func jsonUnmarshal(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %q: %w", b, err)
	}
	return nil
}
