package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seghub/seghub/pkg/config"
	"github.com/seghub/seghub/pkg/openapiroutes"
)

// oversizedBody streams n bytes that start like a JSON string value, so that a
// decoder keeps reading; it holds nothing but the caller's buffer.
type oversizedBody struct {
	n    int64
	sent atomic.Int64 // read by the test while the transport still writes
}

func (b *oversizedBody) Read(p []byte) (int, error) {
	sent := b.sent.Load()
	if sent >= b.n {
		return 0, io.EOF
	}
	k := min(int64(len(p)), b.n-sent)
	for i := range p[:k] {
		p[i] = 'x'
		if at := sent + int64(i); at < 6 {
			p[i] = `{"a":"`[at]
		}
	}
	b.sent.Add(k)
	return int(k), nil
}

// procStatus reads a "<name>: <n> kB" line of /proc/self/status in bytes.
func procStatus(t *testing.T, name string) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), name+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/self/status", name)
	return 0
}

// memoryPeaks samples the process's resident set and its Go heap (objects
// live or not yet swept) until stop, which returns both peaks.
func memoryPeaks(t *testing.T) (stop func() (rss, heap uint64)) {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	heapNow := func() uint64 { metrics.Read(sample); return sample[0].Value.Uint64() }
	var rssPeak, heapPeak atomic.Uint64
	rssPeak.Store(uint64(procStatus(t, "VmRSS")))
	heapPeak.Store(heapNow())
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if v := uint64(procStatus(t, "VmRSS")); v > rssPeak.Load() {
					rssPeak.Store(v)
				}
				if v := heapNow(); v > heapPeak.Load() {
					heapPeak.Store(v)
				}
			}
		}
	}()
	return func() (uint64, uint64) {
		close(done)
		wg.Wait()
		return rssPeak.Load(), heapPeak.Load()
	}
}

// allocated is the process's cumulative heap allocation.
func allocated() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestOversizedBodiesEveryRoute is issue 16 point 2 end to end: 64 MiB sent
// to every REST route of the all-in-one. Without a key the answer is 401 and
// the body is not read (seghub authenticates before reading, so an anonymous
// caller never learns the limit); with a valid key it is 413 naming the limit,
// whether the size is declared or only found while reading.
//
// Memory, with the server in this process: a collection runs after each probe
// so that what is measured is what one request costs, not when the collector
// last ran. A request may read at most SEGHUB_REST_MAX_BODY (4 MiB) into a
// buffer that doubles up to the limit: about 2 × the limit allocated, at most
// 1.5 × live at a time. So each probe may allocate at most 4 × the limit
// (16 MiB; measured ~3 ×, the rest being both ends' HTTP plumbing), and the Go
// heap's peak may exceed its starting size by at most 32 MiB (one request's
// buffers, with room for the services' own background work). Either bound is below one
// probe body (64 MiB): a server that held a body whole fails both. Resident
// memory is reported and held under 256 MiB of growth — loose because the race
// detector shadows every heap byte several times over, still far below the
// 1.7 GB the issue measured.
func TestOversizedBodiesEveryRoute(t *testing.T) {
	const probe = 64 << 20
	limit := config.Defaults().RESTMaxBody
	perProbe, heapBound, rssBound := uint64(4*limit), uint64(32<<20), uint64(256<<20)
	r := start(t, t.TempDir(), nil)
	adminKey := keyPattern.FindString(r.stdout.String())
	routes := openapiroutes.Every(t)
	client := &http.Client{Timeout: 60 * time.Second}
	var worstAlloc uint64
	send := func(rt openapiroutes.Route, key string, declared bool) (int, string) {
		path := rt.Fill("probe1")
		body := &oversizedBody{n: probe}
		req, err := http.NewRequest(rt.Method, "http://"+r.httpAddr+path, body)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = -1 // streamed: the size shows only while reading
		if declared {
			req.ContentLength = probe
		}
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		before := allocated()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v (after sending %d bytes)", rt.Method, path, err, body.sent.Load())
		}
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		client.CloseIdleConnections()
		runtime.GC()
		alloc := allocated() - before
		worstAlloc = max(worstAlloc, alloc)
		if alloc > perProbe {
			t.Errorf("%s %s (key %v, declared %v): %d MiB allocated, bound %d MiB", rt.Method, path, key != "", declared, alloc>>20, perProbe>>20)
		}
		return resp.StatusCode, string(raw)
	}

	runtime.GC()
	debug.FreeOSMemory()
	baseRSS := uint64(procStatus(t, "VmRSS"))
	stop := memoryPeaks(t)
	baseHeap := func() uint64 { _, h := stop(); return h }() // the peak so far is the start
	stop = memoryPeaks(t)
	probes := 0
	for _, rt := range routes {
		what := rt.Method + " " + rt.Fill("probe1")
		for _, declared := range []bool{false, true} {
			if code, body := send(rt, "", declared); code != http.StatusUnauthorized {
				t.Errorf("%s without a key (declared %v): %d %s, want 401", what, declared, code, body)
			}
			probes++
		}
		code, body := send(rt, adminKey, true)
		if code != http.StatusRequestEntityTooLarge || !strings.Contains(body, fmt.Sprint(limit)) {
			t.Errorf("%s with a key, declared %d bytes: %d %s, want 413 naming %d", what, probe, code, body, limit)
		}
		probes++
		if rt.HasBody() {
			code, body := send(rt, adminKey, false)
			if code != http.StatusRequestEntityTooLarge || !strings.Contains(body, fmt.Sprint(limit)) {
				t.Errorf("%s with a key, streamed: %d %s, want 413 naming %d", what, code, body, limit)
			}
			probes++
		}
	}
	rss, heap := stop()
	t.Logf("%d probes of %d MiB on %d routes: worst allocation %.1f MiB a probe (bound %d); Go heap %.1f → peak %.1f MiB (+%.1f, bound %d); RSS %d → peak %d MiB (+%d, bound %d)",
		probes, probe>>20, len(routes), float64(worstAlloc)/(1<<20), perProbe>>20,
		float64(baseHeap)/(1<<20), float64(heap)/(1<<20), (float64(heap)-float64(baseHeap))/(1<<20), heapBound>>20,
		baseRSS>>20, rss>>20, (int64(rss)-int64(baseRSS))>>20, rssBound>>20)
	if heap > baseHeap+heapBound {
		t.Errorf("Go heap peaked %d MiB over its start; bound %d MiB", (heap-baseHeap)>>20, heapBound>>20)
	}
	if rss > baseRSS+rssBound {
		t.Errorf("RSS grew by %d MiB; bound %d MiB", (rss-baseRSS)>>20, rssBound>>20)
	}

	// Refused requests leave nothing running behind them: no HTTP connection
	// or gateway goroutine outlives its request (the services' own
	// background work is not counted).
	deadline := time.Now().Add(10 * time.Second)
	left := requestGoroutines()
	for len(left) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		left = requestGoroutines()
	}
	if len(left) > 0 {
		t.Errorf("%d request goroutines outlived the probes:\n%s", len(left), strings.Join(left, "\n\n"))
	}
}

// requestGoroutines returns the stacks of goroutines serving an HTTP
// connection or running gateway code.
func requestGoroutines() []string {
	var b bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
	var out []string
	for _, g := range strings.Split(b.String(), "\n\n") {
		if strings.Contains(g, "net/http.(*conn).serve") || strings.Contains(g, "seghub/services/gateway.") {
			out = append(out, g)
		}
	}
	return out
}

// TestRESTSizeRefusalsAndZeroValues: requests with more items than a call
// takes are 413 with the limit named and change nothing; false and zero
// fields are present in REST answers.
func TestRESTSizeRefusalsAndZeroValues(t *testing.T) {
	r := start(t, t.TempDir(), nil)
	key := keyPattern.FindString(r.stdout.String())
	code, body := r.do(t, "POST", "/v1/segments", key, `{"name":"Bounded"}`)
	seg := field(body, "segment", "segment_id")
	if code != 200 || seg == "" {
		t.Fatalf("create segment: %d %v", code, body)
	}
	if code, body = r.do(t, "POST", "/v1/segments/"+seg+"/members:add", key, `{"user_ids":["u1"]}`); code != 200 {
		t.Fatalf("add: %d %v", code, body)
	}

	many := func(n int, item func(i int) string) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = item(i)
		}
		return strings.Join(parts, ",")
	}
	for _, tc := range []struct {
		path, body, limit string
	}{
		{"/v1/segments/" + seg + "/members:add", `{"user_ids":[` + many(100001, func(i int) string { return fmt.Sprintf(`"m%06d"`, i) }) + `]}`, "at most 100000"},
		{"/v1/users:upsert", `{"users":[` + many(1001, func(i int) string { return fmt.Sprintf(`{"user_id":"m%06d"}`, i) }) + `]}`, "at most 1000"},
		{"/v1/events:trackBatch", `{"events":[` + many(1001, func(i int) string {
			return fmt.Sprintf(`{"source":"commandbar","user_id":"m%06d","name":"opened"}`, i)
		}) + `]}`, "at most 1000"},
		{"/v1/targeting:batchCheck", `{"checks":[` + many(10001, func(i int) string { return fmt.Sprintf(`{"user_id":"m%06d","segment_id":"%s"}`, i, seg) }) + `]}`, "at most 10000"},
	} {
		code, raw := r.exchange(t, "POST", tc.path, key, tc.body)
		if code != http.StatusRequestEntityTooLarge || !strings.Contains(string(raw), tc.limit) {
			t.Errorf("%s over its item limit: %d %.300s; want 413 naming %q", tc.path, code, raw, tc.limit)
		}
	}
	code, body = r.do(t, "GET", "/v1/segments/"+seg, key, "")
	if code != 200 || field(body, "segment", "member_count") != "1" {
		t.Errorf("refused calls changed the segment: %d %v", code, body)
	}
	if code, _ = r.do(t, "GET", "/v1/users/m000000", key, ""); code != http.StatusNotFound {
		t.Errorf("a refused upsert created a user: %d", code)
	}

	deadline := time.Now().Add(10 * time.Second)
	for {
		code, raw := r.exchange(t, "GET", "/v1/targeting/segments/"+seg+"/members/nobody", key, "")
		var out map[string]any
		_ = json.Unmarshal(raw, &out)
		if v, ok := out["is_member"]; code == 200 && ok && v == false {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("is_member false not present: %d %s", code, raw)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// jsonList is a decoded JSON array, or nil for anything else.
func jsonList(v any) []any {
	l, _ := v.([]any)
	return l
}
