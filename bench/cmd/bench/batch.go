package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/c360dev/c360/bench/load"
)

// batchSize is the calls per /v1/batch request, as analytics libraries
// flush them.
const batchSize = 100

// batchBuilder writes Segment /v1/batch bodies for one run: every fifth call
// an identify (traits with an email), the others tracks, each call with a
// messageId unique to (run, worker, seq, i).
type batchBuilder struct {
	nonce     string
	timestamp string
}

// append writes the batch into buf; user(i) picks the i-th call's user.
func (b *batchBuilder) append(buf *bytes.Buffer, worker, seq int, user func(i int) int) {
	buf.WriteString(`{"batch":[`)
	for i := range batchSize {
		if i > 0 {
			buf.WriteByte(',')
		}
		u := strconv.Itoa(user(i))
		id := b.nonce + "-" + strconv.Itoa(worker) + "-" + strconv.Itoa(seq) + "-" + strconv.Itoa(i)
		if i%5 == 0 {
			buf.WriteString(`{"type":"identify","userId":"user-` + u + `","messageId":"` + id + `","timestamp":"` + b.timestamp +
				`","traits":{"email":"user-` + u + `@batch.example","name":"User ` + u + `","plan":"pro"},` +
				`"context":{"library":{"name":"analytics-node","version":"3.1.0"}}}`)
			continue
		}
		buf.WriteString(`{"type":"track","event":"Product Viewed","userId":"user-` + u + `","messageId":"` + id +
			`","timestamp":"` + b.timestamp + `","properties":{"product_id":"p-` + strconv.Itoa(seq%997) +
			`","category":"Games","price":18.99,"quantity":1},"context":{"library":{"name":"analytics-node","version":"3.1.0"}}}`)
	}
	buf.WriteString(`],"sentAt":"` + b.timestamp + `"}`)
}

// benchBatch sends Segment /v1/batch requests of 100 calls with the
// workspace's write key at a few concurrency levels and reports events per
// second. A request counts only when answered 200 with every call accepted.
func benchBatch(ctx context.Context, cfg config, ic *ingestConfig) error {
	workerLevels, err := levels(cfg, "--batch-workers", ic.batchWorkers)
	if err != nil {
		return err
	}
	creds, err := ingestWorkspace(ctx, cfg, ic, "batch", "batch benchmark", nil)
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

	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(creds.WriteKey+":"))
	client := httpClient(slices.Max(workerLevels))
	builder := &batchBuilder{nonce: nonce(12), timestamp: time.Now().UTC().Format("2006-01-02T15:04:05.000Z")}
	// Building a body costs the client ~0.2 µs per call, against the
	// server's parse, resolve and write of each: it stays inline.
	bufs := make([]bytes.Buffer, slices.Max(workerLevels))
	send := func(ctx context.Context, worker, seq int, user func(i int) int) error {
		buf := &bufs[worker]
		buf.Reset()
		builder.append(buf, worker, seq, user)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/batch", bytes.NewReader(buf.Bytes()))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", auth)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !bytes.HasPrefix(raw, []byte(`{"success":true}`)) {
			return fmt.Errorf("status %d: %.200s", resp.StatusCode, raw)
		}
		return nil
	}

	fmt.Printf("\n## Segment /v1/batch, %d calls per request (1 in 5 identify); %d users, workspace %s\n", batchSize, ic.users, creds.Slug)
	// Warm-up: each user's first calls create its customer; the measured
	// runs then resolve existing ones.
	var next atomic.Int64
	warm := load.Run(ctx, "segment batch, new users", slices.Max(workerLevels), 2*time.Minute, (ic.users+batchSize-1)/batchSize,
		func(ctx context.Context, worker, seq int) error {
			first := int(next.Add(batchSize) - batchSize)
			return send(ctx, worker, -1-seq, func(i int) int { return (first + i) % ic.users })
		})
	warm.UnitsPerOp = batchSize
	fmt.Println(warm)
	if err := afterWarmUp(ctx, cfg, ic); err != nil {
		return err
	}

	var results []load.Result
	for li, workers := range workerLevels {
		rngs := make([]*mrand.Rand, workers)
		for w := range rngs {
			rngs[w] = mrand.New(mrand.NewPCG(uint64(li), uint64(w)))
		}
		op := func(ctx context.Context, worker, seq int) error {
			rng := rngs[worker]
			// seq is offset per level: message ids stay unique across levels.
			return send(ctx, worker, li<<32|seq, func(int) int { return rng.IntN(ic.users) })
		}
		r := runProfiled(ctx, li == len(workerLevels)-1 && ic.profileDir != "", pprofAddr, ic.profileDir,
			"segment batch", workers, cfg.duration, op)
		r.UnitsPerOp = batchSize
		fmt.Println(r)
		results = append(results, r)
	}
	printTarget("/v1/batch events", results, 100000, 0)
	return nil
}
