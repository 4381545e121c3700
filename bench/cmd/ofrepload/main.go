// Command ofrepload measures OFREP bulk evaluation (POST
// /ofrep/v1/evaluate/flags) of users against an environment with 50
// experiences: the all-in-one runs as its own process (the binary given by
// -bin), this process is the load client, and the server's CPU per request
// is read from /proc/<pid>/stat before and after each phase.
//
// Phases, each -d long at -c concurrent requests:
//   - full: no If-None-Match, every answer a 200 with every flag;
//   - etag: each client polls for its users in turn and sends back the ETag
//     it last got for the user, as the web provider does; unchanged answers
//     are 304;
//   - etag+churn: the same while another goroutine adds and removes user u1
//     in a segment -churn times a second: the environment's index version
//     moves, u1's answer changes, the others' answers do not.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/seghub/seghub/bench/internal/harness"
)

func main() {
	bin := flag.String("bin", "", "the seghub binary to run (go build -o /tmp/seghub ./cmd/seghub)")
	experiences := flag.Int("experiences", 50, "experiences in the environment")
	segments := flag.Int("segments", 10, "public segments the experiences' audiences use")
	users := flag.Int("users", 1000, "users the load asks about")
	conc := flag.Int("c", 50, "concurrent requests")
	dur := flag.Duration("d", 10*time.Second, "duration of each phase")
	churn := flag.Float64("churn", 10, "membership changes per second in the etag+churn phase")
	flag.Parse()
	if *bin == "" {
		fmt.Fprintln(os.Stderr, "ofrepload: -bin is required")
		os.Exit(2)
	}
	if err := run(*bin, *experiences, *segments, *users, *conc, *dur, *churn); err != nil {
		fmt.Fprintln(os.Stderr, "ofrepload:", err)
		os.Exit(1)
	}
}

// server is the seghub child process.
type server struct {
	*harness.Binary
	base string // http://<REST address>
}

func startServer(bin string) (*server, error) {
	b, err := harness.StartBinary(harness.BinaryOptions{Bin: bin, Env: []string{"SEGHUB_LOG_LEVEL=warn"}})
	if err != nil {
		return nil, err
	}
	return &server{Binary: b, base: "http://" + b.HTTPAddr}, nil
}

var client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}, Timeout: 30 * time.Second}

// call sends one JSON request and decodes a JSON answer into out (if any).
func call(method, url, key, body string, header map[string]string, out any) (int, http.Header, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, err
	}
	if out != nil && resp.StatusCode == 200 {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, resp.Header, fmt.Errorf("%s %s: %w", method, url, err)
		}
	}
	if resp.StatusCode >= 400 && out != nil {
		return resp.StatusCode, resp.Header, fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, raw)
	}
	return resp.StatusCode, resp.Header, nil
}

// world is the environment the load asks about.
type world struct {
	client   string
	segments []string
	users    int
}

func setup(s *server, nexp, nseg, nusers int) (*world, error) {
	w := &world{users: nusers}
	var key struct{ Secret string }
	if _, _, err := call("POST", s.base+"/v1/api-keys", s.AdminKey, `{"name":"bench site","role":"ROLE_CLIENT"}`, nil, &key); err != nil {
		return nil, err
	}
	w.client = key.Secret
	var users []string
	for i := range nusers {
		users = append(users, fmt.Sprintf(`{"user_id":"u%d"}`, i))
	}
	if _, _, err := call("POST", s.base+"/v1/users:upsert", s.AdminKey, `{"users":[`+strings.Join(users, ",")+`]}`, nil, &struct{}{}); err != nil {
		return nil, err
	}
	for i := range nseg {
		var seg struct {
			Segment struct {
				SegmentID string `json:"segment_id"`
			}
		}
		if _, _, err := call("POST", s.base+"/v1/segments", s.AdminKey, fmt.Sprintf(`{"name":"bench %d"}`, i), nil, &seg); err != nil {
			return nil, err
		}
		id := seg.Segment.SegmentID
		w.segments = append(w.segments, id)
		// Segment i holds every user whose number is divisible by i+1.
		var members []string
		for u := 0; u < nusers; u += i + 1 {
			members = append(members, fmt.Sprintf(`"u%d"`, u))
		}
		if _, _, err := call("POST", s.base+"/v1/segments/"+id+"/members:add", s.AdminKey, `{"user_ids":[`+strings.Join(members, ",")+`]}`, nil, &struct{}{}); err != nil {
			return nil, err
		}
	}
	for i := range nexp {
		// Audiences of one to three conditions over the segments, AND and OR.
		a, b := w.segments[i%nseg], w.segments[(i*7+3)%nseg]
		audience := fmt.Sprintf(`{"match":{"conditions":[{"operator":"OPERATOR_IN_SEGMENT","segment_id":%q}]}}`, a)
		switch i % 3 {
		case 1:
			audience = fmt.Sprintf(`{"match":{"combinator":"COMBINATOR_AND","conditions":[{"operator":"OPERATOR_IN_SEGMENT","segment_id":%q},{"operator":"OPERATOR_NOT_IN_SEGMENT","segment_id":%q}]}}`, a, b)
		case 2:
			audience = fmt.Sprintf(`{"match":{"combinator":"COMBINATOR_OR","conditions":[{"operator":"OPERATOR_IN_SEGMENT","segment_id":%q},{"operator":"OPERATOR_IN_SEGMENT","segment_id":%q},{"operator":"OPERATOR_EXISTS","property":"plan"}]}}`, a, b)
		}
		body := fmt.Sprintf(`{"name":"tour %02d","type":"EXPERIENCE_TYPE_PRODUCT_TOUR","audience":%s}`, i, audience)
		if _, _, err := call("POST", s.base+"/v1/experiences", s.AdminKey, body, nil, &struct{}{}); err != nil {
			return nil, err
		}
	}
	// Wait until targeting answers with every flag.
	deadline := time.Now().Add(60 * time.Second)
	for {
		var out struct{ Flags []json.RawMessage }
		code, _, _ := call("POST", s.base+"/ofrep/v1/evaluate/flags", w.client, `{"context":{"targetingKey":"u0"}}`, nil, &out)
		if code == 200 && len(out.Flags) == nexp+nseg {
			return w, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("targeting did not answer %d flags in 60s (last: %d, %d flags)", nexp+nseg, code, len(out.Flags))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

type result struct {
	requests, ok, notModified, failed int64
	latencies                         []time.Duration
	cpu, wall                         time.Duration
	changes                           int64
}

// load runs conc clients for dur; with etags each remembers the last ETag of
// every user it asked about and sends it back.
func load(s *server, w *world, conc int, dur time.Duration, etags bool, churn float64) (result, error) {
	var res result
	var mu sync.Mutex
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	var changes atomic.Int64
	var wg sync.WaitGroup
	if churn > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(time.Duration(float64(time.Second) / churn))
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				op := "add"
				if i%2 == 1 {
					op = "remove"
				}
				// Toggles u1 in the last segment: every user's index version moves.
				if _, _, err := call("POST", s.base+"/v1/segments/"+w.segments[len(w.segments)-1]+"/members:"+op, s.AdminKey, `{"user_ids":["u1"]}`, nil, nil); err == nil {
					changes.Add(1)
				}
			}
		}()
	}
	cpu0, err := s.CPU()
	if err != nil {
		return res, err
	}
	start := time.Now()
	for c := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Client c is the pages of users c, c+conc, c+2·conc …, each
			// polling in turn, as browser tabs with the web provider do.
			var mine []int
			for u := c; u < w.users; u += conc {
				mine = append(mine, u)
			}
			seen := map[int]string{}
			var lat []time.Duration
			var n, ok, nm, failed int64
			for i := 0; ctx.Err() == nil; i++ {
				u := mine[i%len(mine)]
				h := map[string]string{}
				if tag, found := seen[u]; etags && found {
					h["If-None-Match"] = tag
				}
				t0 := time.Now()
				code, hdr, err := call("POST", s.base+"/ofrep/v1/evaluate/flags", w.client, fmt.Sprintf(`{"context":{"targetingKey":"u%d"}}`, u), h, nil)
				lat = append(lat, time.Since(t0))
				n++
				switch {
				case err != nil || (code != 200 && code != 304):
					failed++
				case code == 304:
					nm++
				default:
					ok++
					seen[u] = hdr.Get("ETag")
				}
			}
			mu.Lock()
			res.requests += n
			res.ok += ok
			res.notModified += nm
			res.failed += failed
			res.latencies = append(res.latencies, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.wall = time.Since(start)
	cpu1, err := s.CPU()
	if err != nil {
		return res, err
	}
	res.cpu = cpu1 - cpu0
	res.changes = changes.Load()
	return res, nil
}

func (r result) String() string {
	slices.Sort(r.latencies)
	q := func(p float64) time.Duration {
		if len(r.latencies) == 0 {
			return 0
		}
		return r.latencies[int(p*float64(len(r.latencies)-1))].Round(10 * time.Microsecond)
	}
	per := time.Duration(0)
	if r.requests > 0 {
		per = r.cpu / time.Duration(r.requests)
	}
	return fmt.Sprintf("%d req in %.1fs = %.0f req/s; 200: %d, 304: %d (%.1f %%), failed: %d; server CPU %.2fs = %d µs/request; p50 %v p99 %v; %d membership changes",
		r.requests, r.wall.Seconds(), float64(r.requests)/r.wall.Seconds(), r.ok, r.notModified,
		100*float64(r.notModified)/float64(max(1, r.requests)), r.failed, r.cpu.Seconds(), per.Microseconds(), q(0.5), q(0.99), r.changes)
}

func run(bin string, nexp, nseg, nusers, conc int, dur time.Duration, churn float64) error {
	s, err := startServer(bin)
	if err != nil {
		return err
	}
	defer s.Stop()
	w, err := setup(s, nexp, nseg, nusers)
	if err != nil {
		return err
	}
	fmt.Printf("OFREP bulk evaluation: %d experiences + %d public segments a user (%d flags), %d users, %d concurrent, %v a phase, seghub pid %d\n",
		nexp, nseg, nexp+nseg, nusers, conc, dur, s.PID())
	// Warm the server (connections, caches) before measuring.
	if _, err := load(s, w, conc, 2*time.Second, false, 0); err != nil {
		return err
	}
	for _, p := range []struct {
		name  string
		etags bool
		churn float64
	}{{"full (no If-None-Match)", false, 0}, {"etag (If-None-Match as a poller sends it)", true, 0}, {fmt.Sprintf("etag + %.0f membership changes/s", churn), true, churn}} {
		r, err := load(s, w, conc, dur, p.etags, p.churn)
		if err != nil {
			return err
		}
		fmt.Printf("%-45s %v\n", p.name+":", r)
	}
	return nil
}
