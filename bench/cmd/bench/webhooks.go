package main

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/bench/load"
	"github.com/c360dev/c360/bench/seed"
	"github.com/c360dev/c360/postgres"
)

// ingestConfig is the flags of the ingest benchmarks (webhooks, batch).
type ingestConfig struct {
	webhookWorkers string
	// webhookRate is the open-loop run's schedule, and webhookSenders its
	// pool of concurrent senders: the single-webhook target is judged on
	// that run's p99.
	webhookRate    float64
	webhookSenders int
	batchWorkers   string
	phones         int
	users          int
	// profileDir, when set, receives a CPU profile of the server taken
	// during the run at the highest concurrency of each benchmark.
	profileDir string
	// analyze refreshes the planner's statistics after the warm-up.
	analyze bool
	// tenants is how many workspaces the database holds at least before
	// the measured one is created.
	tenants int
}

// ingestFlags registers the ingest benchmarks' flags on the command's flag set.
func ingestFlags(fs *flag.FlagSet) *ingestConfig {
	ic := &ingestConfig{}
	fs.StringVar(&ic.webhookWorkers, "webhook-workers", "1,8,32,64,128", "webhooks: concurrency levels (--workers overrides)")
	fs.Float64Var(&ic.webhookRate, "webhook-rate", webhookTarget, "webhooks: open-loop rate (webhooks/s) whose p99 the target is judged on; 0 skips the run")
	fs.IntVar(&ic.webhookSenders, "webhook-senders", 128, "webhooks: open-loop pool of concurrent senders (a request that finds none free starts late, timed from its schedule)")
	fs.StringVar(&ic.batchWorkers, "batch-workers", "4,16,32", "batch: concurrency levels (--workers overrides)")
	fs.IntVar(&ic.phones, "phones", 10000, "webhooks: distinct sender phones")
	fs.IntVar(&ic.users, "users", 10000, "batch: distinct user ids")
	fs.StringVar(&ic.profileDir, "cpuprofile", "", "webhooks, batch, query: write the server's CPU profile at the highest concurrency into this directory")
	fs.BoolVar(&ic.analyze, "analyze", true, "ANALYZE after the warm-up, as autovacuum eventually would (false: measure a new workspace on stale statistics)")
	fs.IntVar(&ic.tenants, "tenants", 12, "webhooks, batch: workspaces (200 customers each) the database holds at least besides the measured one, as a shared deployment's does")
	return ic
}

// levels returns the concurrency levels of a benchmark: --workers when it
// was given, else the benchmark's own default (flag names it).
func levels(cfg config, flag, own string) ([]int, error) {
	if cfg.workersSet {
		return cfg.workers, nil
	}
	return parseCounts(flag, own)
}

// ingestServerEnv turns the rate limits off (the benchmark measures
// capacity, not the limits), and adds a loopback pprof listener when a
// profile is wanted. It returns the environment and the pprof address.
func ingestServerEnv(ic *ingestConfig) ([]string, string, error) {
	env, addr, err := pprofEnv(ic.profileDir)
	return append(env, "C360_RATE_WEBHOOK_RPS=-1", "C360_RATE_KEY_RPS=-1"), addr, err
}

// pprofEnv returns the server's environment for a loopback pprof listener,
// and its address, when dir asks for profiles; nothing otherwise.
func pprofEnv(dir string) ([]string, string, error) {
	if dir == "" {
		return nil, "", nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	addr := ln.Addr().String()
	ln.Close()
	return []string{"C360_PPROF_ADDR=" + addr}, addr, nil
}

// ensureTenants gives the database at least n workspaces besides the one
// measured, each with 200 seeded customers. A deployment serves many
// workspaces, and the planner's generic plans differ with their number:
// with ten or more it takes "id = ANY($1)" to find one row, which is what
// made one group statement compare n² pairs until a57d70f. Measuring in a
// database of one workspace hid that. db is a store without a statement
// timeout (openSeeding): a seed's statements run long beside millions of
// rows.
func ensureTenants(ctx context.Context, db *postgres.DB, n int) error {
	var have int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM workspaces`).Scan(&have); err != nil {
		return err
	}
	if have >= n {
		return nil
	}
	t := time.Now()
	for i := have; i < n; i++ {
		creds, err := db.CreateWorkspace(ctx, fmt.Sprintf("bench-tenant-%d-%d", time.Now().Unix(), i), "benchmark tenant")
		if err != nil {
			return err
		}
		if _, err := seed.Run(ctx, db.Pool, creds.ID, seed.Options{Customers: 200, EventsPerCustomer: 2, MessagesPerConv: 2}); err != nil {
			return fmt.Errorf("seed tenant: %w", err)
		}
	}
	fmt.Printf("  (%d other workspaces seeded: %.1fs)\n", n-have, time.Since(t).Seconds())
	return nil
}

// ingestWorkspace creates the workspace an ingest benchmark measures
// (bench-<kind>-<unix time>) in a database of at least ic.tenants others,
// and applies update to it when one is given.
func ingestWorkspace(ctx context.Context, cfg config, ic *ingestConfig, kind, name string, update *c360.WorkspaceUpdate) (*c360.WorkspaceCredentials, error) {
	// The tenants' seeds run beside the query's million customers.
	db, err := openSeeding(ctx, cfg.databaseURL)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	if err := ensureTenants(ctx, db, ic.tenants); err != nil {
		return nil, err
	}
	creds, err := db.CreateWorkspace(ctx, fmt.Sprintf("bench-%s-%d", kind, time.Now().Unix()), name)
	if err != nil {
		return nil, err
	}
	if update != nil {
		if _, err := db.UpdateWorkspace(ctx, creds.Slug, *update); err != nil {
			return nil, fmt.Errorf("update the workspace: %w", err)
		}
	}
	return creds, nil
}

// afterWarmUp runs ANALYZE on the tables ingest writes, when asked. The
// warm-up filled a new workspace faster than autovacuum analyzes: on the
// statistics of before, the planner estimates one row for the workspace and
// may pick plans that scan all of its rows per statement, which measures
// the plans of a workspace's first minutes, not ingest's steady state.
func afterWarmUp(ctx context.Context, cfg config, ic *ingestConfig) error {
	if !ic.analyze {
		fmt.Println("  (no ANALYZE after the warm-up: statistics as autovacuum left them)")
		return nil
	}
	db, err := postgres.Open(ctx, cfg.databaseURL)
	if err != nil {
		return err
	}
	defer db.Close()
	t := time.Now()
	if _, err := db.Pool.Exec(ctx, `ANALYZE customers, identities, events, conversations, messages`); err != nil {
		return fmt.Errorf("analyze: %w", err)
	}
	fmt.Printf("  (ANALYZE after the warm-up: %.1fs)\n", time.Since(t).Seconds())
	return nil
}

// profile fetches a CPU profile of d from the server's pprof listener into
// dir/name.pprof. It runs beside a load run, so it reports its error
// rather than stopping the run.
func profile(ctx context.Context, pprofAddr, dir, name string, d time.Duration) error {
	secs := max(1, int(d.Seconds()))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", pprofAddr, secs), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetch profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch profile: status %d", resp.StatusCode)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(dir, name+".pprof")
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Printf("  cpu profile (%ds): %s\n", secs, path)
	return nil
}

// runProfiled is load.Run, with a CPU profile of the server taken during
// the run when profiled is true.
func runProfiled(ctx context.Context, profiled bool, pprofAddr, dir, name string, workers int, d time.Duration,
	op func(ctx context.Context, worker, seq int) error) load.Result {
	if !profiled || pprofAddr == "" {
		return load.Run(ctx, name, workers, d, 0, op)
	}
	done := make(chan error, 1)
	go func() {
		done <- profile(ctx, pprofAddr, dir, fmt.Sprintf("%s-%d", strings.ReplaceAll(name, " ", "-"), workers), min(d, 5*time.Second))
	}()
	r := load.Run(ctx, name, workers, d, 0, op)
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, "bench: profile:", err)
	}
	return r
}

// httpClient keeps a connection per worker alive across requests, as a
// provider's webhook sender does.
func httpClient(workers int) *http.Client {
	return &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: workers + 16, DisableCompression: true, IdleConnTimeout: time.Minute},
	}
}

// nonce returns n random hex characters: request ids of one benchmark run
// never collide with those of another run on the same database.
func nonce(n int) string {
	b := make([]byte, (n+1)/2)
	rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

// twilioPhone returns the i-th sender phone of the webhook benchmark.
func twilioPhone(i int) string { return "+1415" + strconv.Itoa(3000000+i) }

const (
	benchAccountSID = "AC00000000000000000000000000be0c"
	benchTwilioTo   = "+14155550199"
	emptyTwiML      = `<?xml version="1.0" encoding="UTF-8"?><Response/>`
	// webhookCeiling sizes the requests signed ahead of a run: this rate
	// for the run's duration. Past it a worker signs inline.
	webhookCeiling = 15000
	// webhookTarget and webhookP99 are issue 9's single-webhook target:
	// acknowledged webhooks per second at a p99 bound.
	webhookTarget = 5000
	webhookP99    = 50 * time.Millisecond
)

// signedWebhook is one inbound message webhook, body encoded and signed.
type signedWebhook struct {
	body, signature string
}

// twilioSigner builds Twilio's inbound message webhooks for one workspace.
type twilioSigner struct {
	url   string // the URL Twilio calls, as the server rebuilds it
	token []byte
	nonce string
}

// request builds and signs the webhook with MessageSid unique to (run,
// level, worker, seq), from a sender among the signer's phones.
func (s *twilioSigner) request(level, worker, seq, phone int) signedWebhook {
	sid := fmt.Sprintf("SM%s%04x%04x%016x", s.nonce, level&0xffff, worker&0xffff, seq)
	form := url.Values{
		"MessageSid": {sid}, "SmsMessageSid": {sid}, "SmsSid": {sid}, "AccountSid": {benchAccountSID},
		"From": {twilioPhone(phone)}, "To": {benchTwilioTo}, "Body": {"Hi, is my order " + strconv.Itoa(seq) + " on its way?"},
		"NumMedia": {"0"}, "NumSegments": {"1"}, "SmsStatus": {"received"}, "ApiVersion": {"2010-04-01"},
	}
	return signedWebhook{body: form.Encode(), signature: s.sign(form)}
}

// sign computes X-Twilio-Signature as Twilio documents it: HMAC-SHA1 with
// the auth token over the URL followed by each parameter's name and value,
// sorted by name; base64.
func (s *twilioSigner) sign(form url.Values) string {
	keys := make([]string, 0, len(form))
	for k := range form {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	mac := hmac.New(sha1.New, s.token)
	io.WriteString(mac, s.url)
	for _, k := range keys {
		io.WriteString(mac, k)
		io.WriteString(mac, form.Get(k))
	}
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// benchWebhooks sends signed single Twilio inbound webhooks at rising
// concurrency and reports acknowledged events per second: a request counts
// only when answered 200 with the empty TwiML, i.e. after ingest committed.
// Then it sends them open-loop at --webhook-rate, and judges the target on
// that run: closed-loop latencies hide a server's stalls (see package load).
func benchWebhooks(ctx context.Context, cfg config, ic *ingestConfig) error {
	workerLevels, err := levels(cfg, "--webhook-workers", ic.webhookWorkers)
	if err != nil {
		return err
	}
	token, sid := nonce(32), benchAccountSID
	creds, err := ingestWorkspace(ctx, cfg, ic, "wh", "webhook benchmark",
		&c360.WorkspaceUpdate{TwilioAuthToken: &token, TwilioAccountSID: &sid})
	if err != nil {
		return err
	}
	env, pprofAddr, err := ingestServerEnv(ic)
	if err != nil {
		return err
	}
	srv, err := startServer(ctx, cfg, env...)
	if err != nil {
		return err
	}
	defer srv.Stop()

	path := "/webhooks/twilio/" + creds.Slug
	signer := &twilioSigner{url: srv.URL + path, token: []byte(token), nonce: nonce(8)}
	client := httpClient(max(slices.Max(workerLevels), ic.webhookSenders))
	send := func(ctx context.Context, w signedWebhook) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+path, strings.NewReader(w.body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Twilio-Signature", w.signature)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || string(raw) != emptyTwiML {
			return fmt.Errorf("status %d: %.200s", resp.StatusCode, raw)
		}
		return nil
	}

	fmt.Printf("\n## Twilio inbound webhooks, signed, one message each; %d sender phones, workspace %s\n", ic.phones, creds.Slug)
	// Warm-up: the first message of each phone creates its customer and
	// conversation; the measured runs then find existing ones, as a
	// provider's steady traffic mostly does.
	var next atomic.Int64
	warm := load.Run(ctx, "twilio webhook, new customers", slices.Max(workerLevels), 2*time.Minute, ic.phones,
		func(ctx context.Context, worker, seq int) error {
			i := int(next.Add(1) - 1)
			return send(ctx, signer.request(0, worker, seq, i%ic.phones))
		})
	fmt.Println(warm)
	if err := afterWarmUp(ctx, cfg, ic); err != nil {
		return err
	}

	var results []load.Result
	for li, workers := range workerLevels {
		// Signing is the provider's cost, not the server's: sign ahead.
		perWorker := int(math.Ceil(webhookCeiling*cfg.duration.Seconds()/float64(workers))) + 16
		pre := make([][]signedWebhook, workers)
		for w := range pre {
			rng := mrand.New(mrand.NewPCG(uint64(li), uint64(w)))
			pre[w] = make([]signedWebhook, perWorker)
			for seq := range pre[w] {
				pre[w][seq] = signer.request(li+1, w, seq, rng.IntN(ic.phones))
			}
		}
		var inline atomic.Int64
		op := func(ctx context.Context, worker, seq int) error {
			if seq < len(pre[worker]) {
				return send(ctx, pre[worker][seq])
			}
			inline.Add(1)
			return send(ctx, signer.request(li+1, worker, seq, mrand.IntN(ic.phones)))
		}
		r := runProfiled(ctx, li == len(workerLevels)-1 && ic.profileDir != "", pprofAddr, ic.profileDir,
			"twilio webhook", workers, cfg.duration, op)
		fmt.Println(r)
		if n := inline.Load(); n > 0 {
			fmt.Printf("  (%d requests signed inline: the run outpaced the %d/s signed ahead)\n", n, webhookCeiling)
		}
		results = append(results, r)
	}
	if best := bestRun(results, 0); best != nil {
		fmt.Printf("  closed loop, best error-free: %.0f/s at %d workers, p99 %s (each worker times from its own send, so a stall counts once per worker: not the target's measure)\n",
			best.UnitsPerSecond(), best.Workers, best.P99.Round(time.Microsecond))
	}
	if ic.webhookRate == 0 {
		fmt.Println("  (no open-loop run: --webhook-rate 0; the target is not judged)")
		return nil
	}

	// Open loop: sends scheduled at the rate, each timed from its
	// schedule, so a stall counts for every request due during it.
	level := len(workerLevels) + 1
	pre := make([]signedWebhook, int(math.Ceil(ic.webhookRate*cfg.duration.Seconds())))
	rng := mrand.New(mrand.NewPCG(uint64(level), 0))
	for seq := range pre {
		pre[seq] = signer.request(level, 0, seq, rng.IntN(ic.phones))
	}
	fmt.Printf("\n## Twilio inbound webhooks, open loop: %.0f/s scheduled for %s, %d senders, timed from each request's scheduled send\n",
		ic.webhookRate, cfg.duration, ic.webhookSenders)
	open := load.RunRate(ctx, "twilio webhook, open loop", ic.webhookRate, ic.webhookSenders, cfg.duration,
		func(ctx context.Context, seq int) error { return send(ctx, pre[seq]) })
	fmt.Println(open)
	printRateTarget("single webhooks", open, webhookTarget, webhookP99)
	return nil
}

// printRateTarget judges a throughput target at a p99 bound on an
// open-loop run (rateVerdict), and prints the verdict with the figures.
func printRateTarget(what string, r load.Result, perSecond float64, p99 time.Duration) {
	fmt.Printf("  TARGET %s ≥ %.0f/s at p99 ≤ %s, open loop: %s: p99 %s at %.0f/s scheduled (achieved %.0f/s: acknowledged per second of the %s schedule, answers up to %s past its end allowed; %d of %d started late)\n",
		what, perSecond, p99, rateVerdict(r, perSecond, p99), r.P99.Round(time.Microsecond), r.Rate,
		r.Achieved(p99), r.ScheduledFor().Round(time.Millisecond), p99, r.Late, r.Scheduled)
}

// rateVerdict judges a throughput target at a p99 bound on an open-loop
// run: met when the run was scheduled at the target rate or more, every
// request was acknowledged, the achieved rate reached the target, and the
// p99 from the scheduled sends is within the bound.
//
// The achieved rate is load.Result.Achieved with the p99 bound as the
// tail: acknowledged requests per second of the schedule, the last
// answers allowed the bound past its end. Ops per second to the last
// answer is always a little under the schedule (the last request is
// answered its latency after the schedule's end), so requiring it to
// reach the target would fail a server that keeps up; over the schedule
// alone, it would pass one whose backlog drains long after the schedule
// ends, which the p99 does not see when the backlog is in the last 1% of
// the run. With the bound as the tail, a run whose answers end more than
// the bound after the schedule falls short of the target.
func rateVerdict(r load.Result, perSecond float64, p99 time.Duration) string {
	switch {
	case r.Rate < perSecond:
		return fmt.Sprintf("not judged (scheduled %.0f/s, below the target)", r.Rate)
	case r.Errors > 0:
		return fmt.Sprintf("not met (%d errors, %d unsent)", r.Errors, r.Unsent)
	case r.Achieved(p99) < perSecond*(1-1e-9): // float rounding of a schedule that is exactly the target
		return fmt.Sprintf("not met (achieved %.0f/s: the last answer came %s after the schedule's end)",
			r.Achieved(p99), (r.Elapsed - r.ScheduledFor()).Round(time.Millisecond))
	case r.P99 > p99:
		return "not met (p99 over the bound)"
	}
	return "met"
}

// bestRun is the error-free run of the highest throughput within a p99
// bound (p99 0 means no bound), nil when there is none.
func bestRun(results []load.Result, p99 time.Duration) *load.Result {
	var best *load.Result
	for i, r := range results {
		if r.Errors > 0 || (p99 > 0 && r.P99 > p99) {
			continue
		}
		if best == nil || r.UnitsPerSecond() > best.UnitsPerSecond() {
			best = &results[i]
		}
	}
	return best
}

// printTarget says which run best meets a throughput target at a p99 bound
// (p99 0 means no bound).
func printTarget(what string, results []load.Result, perSecond float64, p99 time.Duration) {
	best := bestRun(results, p99)
	bound := ""
	if p99 > 0 {
		bound = " at p99 ≤ " + p99.String()
	}
	if best == nil {
		fmt.Printf("  target %s ≥ %.0f/s%s: no error-free run within the bound\n", what, perSecond, bound)
		return
	}
	verdict := "met"
	if best.UnitsPerSecond() < perSecond {
		verdict = "not met"
	}
	fmt.Printf("  target %s ≥ %.0f/s%s: %s (best %.0f/s at %d workers, p99 %s)\n", what, perSecond, bound, verdict,
		best.UnitsPerSecond(), best.Workers, best.P99.Round(time.Microsecond))
}
