package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/seghub/seghub/pkg/config"
	"github.com/seghub/seghub/services/destsim"
)

// The console's bench (bench/RESULTS.md, not part of make test):
//
//	SEGHUB_BENCH_CONSOLE=1 CI=true go test -count=1 -run TestConsoleLoadBench -v ./cmd/seghub
//
// It reports the JavaScript of the first load (gzipped) and the time from
// navigation to the data on screen of the segments page with 10 000
// segments and of a segment page whose sync has 50 runs, three cold loads
// each (browser cache cleared), from the page's own Performance API.
func TestConsoleLoadBench(t *testing.T) {
	if os.Getenv("SEGHUB_BENCH_CONSOLE") == "" {
		t.Skip("a benchmark: set SEGHUB_BENCH_CONSOLE=1 to run it (see bench/RESULTS.md)")
	}
	newTab := newBrowser(t)
	sim := destsim.New(destsim.DemoCredentials())
	simSrv := httptest.NewServer(sim)
	defer simSrv.Close()
	r := start(t, t.TempDir(), func(c *config.Config) {
		c.AppcuesURL, c.CommandBarURL, c.AnalyticsURL = simSrv.URL, simSrv.URL, simSrv.URL
	})
	admin := keyPattern.FindString(r.stdout.String())

	// 10 000 segments, eight writers.
	began := time.Now()
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < 8; w++ {
		wg.Go(func() {
			for i := range next {
				r.ok(t, "POST", "/v1/segments", admin, fmt.Sprintf(`{"name":"Bench segment %05d","visibility":"VISIBILITY_PUBLIC"}`, i))
			}
		})
	}
	for i := 0; i < 10000; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	t.Logf("created 10 000 segments in %s", time.Since(began).Round(time.Millisecond))

	// One segment synced to Appcues 50 times.
	seg := field(r.ok(t, "POST", "/v1/segments", admin, `{"name":"Synced fifty times","visibility":"VISIBILITY_PUBLIC"}`), "segment", "segment_id")
	r.ok(t, "POST", "/v1/users:upsert", admin, `{"users":[{"user_id":"u1","properties":{"appcuesUserID":{"string_value":"ac-1"}}}]}`)
	r.ok(t, "POST", "/v1/segments/"+seg+"/members:add", admin, `{"user_ids":["u1"]}`)
	conn := field(r.ok(t, "POST", "/v1/connections", admin, `{"type":"appcues","name":"Appcues","credentials":{"account_id":"demo","api_key":"demo-key","api_secret":"demo-secret"}}`), "connection", "connection_id")
	syncID := field(r.ok(t, "POST", "/v1/syncs", admin, `{"segment_id":"`+seg+`","connection_id":"`+conn+`","schedule":"SYNC_SCHEDULE_ONE_TIME"}`), "sync", "sync_id")
	runs := func() int {
		body := r.ok(t, "GET", "/v1/syncs/"+syncID+"/runs?page_size=100", admin, "")
		list, _ := body["runs"].([]any)
		done := 0
		for _, x := range list {
			if s := x.(map[string]any)["status"]; s != "SYNC_RUN_STATUS_QUEUED" && s != "SYNC_RUN_STATUS_RUNNING" {
				done++
			}
		}
		return done
	}
	for n := runs(); n < 50; n = runs() {
		if code, _ := r.do(t, "POST", "/v1/syncs/"+syncID+":run", admin, "{}"); code != 200 && code != 409 && code != 400 {
			t.Fatalf("sync now: %d", code)
		}
		waitFor(t, 30*time.Second, func() bool { return runs() > n }, "a run to finish")
	}

	u := &ui{t: t, ctx: newTab(t), base: "http://" + r.httpAddr, shot: screenshotDir(t)}

	// First load: the sign-in page's scripts, gzipped as a server would send them.
	if _, err := chromedp.Call(u.ctx, network.ClearBrowserCache, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	u.open("/")
	u.find("textbox", "API key")
	scripts, raw, gz := loadedScripts(t, u)
	t.Logf("BENCH first load (sign-in page): %d scripts, %.1f KB of JavaScript, %.1f KB gzipped", scripts, raw, gz)

	u.fill("textbox", "API key", admin)
	u.click("button", "Sign in")
	u.find("heading", "Segments")

	// Cold loads: cache cleared, navigate, then the page reports (in its own
	// clock, from navigation start) when the data is on screen.
	measure := func(path, ready string) (domContentLoaded, dataShown float64) {
		if _, err := chromedp.Call(u.ctx, network.ClearBrowserCache, cdp.Empty{}); err != nil {
			t.Fatal(err)
		}
		u.open(path)
		v := eval[[]float64](u, `new Promise(resolve => {
			const check = () => {
				if (`+ready+`) {
					const nav = performance.getEntriesByType("navigation")[0];
					resolve([nav.domContentLoadedEventEnd, performance.now()]);
				} else requestAnimationFrame(check);
			};
			check();
		})`, chromedp.EvalAwaitPromise)
		return v[0], v[1]
	}
	for i := 1; i <= 3; i++ {
		dcl, shown := measure("/segments", `document.querySelectorAll("main tbody tr").length === 50`)
		if i == 1 {
			scripts, raw, gz := loadedScripts(t, u)
			t.Logf("BENCH first load of the segments page, signed in: %d scripts, %.1f KB of JavaScript, %.1f KB gzipped", scripts, raw, gz)
		}
		t.Logf("BENCH segments page (10 001 segments, first page of 50) run %d: DOMContentLoaded %.0f ms, rows on screen %.0f ms", i, dcl, shown)
	}
	for i := 1; i <= 3; i++ {
		dcl, shown := measure("/segments/"+seg, `document.body.innerText.includes("Synced as") && [...document.querySelectorAll("main button")].some(b => b.innerText === "Sync now")`)
		t.Logf("BENCH segment page (sync with 50 runs) run %d: DOMContentLoaded %.0f ms, sync row with Sync now on screen %.0f ms", i, dcl, shown)
	}
	// The run history: open it and time until its first page (20 runs) shows.
	for i := 1; i <= 3; i++ {
		u.open("/segments/" + seg)
		u.find("button", "Run history")
		v := eval[float64](u, `new Promise(resolve => {
			const t0 = performance.now();
			[...document.querySelectorAll("main button")].find(b => b.innerText === "Run history").click();
			const check = () => document.querySelectorAll("main tbody tr").length >= 20 ? resolve(performance.now() - t0) : requestAnimationFrame(check);
			check();
		})`, chromedp.EvalAwaitPromise)
		t.Logf("BENCH run history (20 of 50 runs) run %d: %.0f ms from the click", i, v)
	}
	if !strings.Contains(u.text(), "Run history") {
		t.Fatal("the run history did not show")
	}
}

// loadedScripts sums the JavaScript the page loaded, raw and gzipped (-9) as
// a compressing server or proxy would send it.
func loadedScripts(t *testing.T, u *ui) (n int, rawKB, gzKB float64) {
	t.Helper()
	scripts := eval[[]string](u, `performance.getEntriesByType("resource").filter(e => e.name.endsWith(".js")).map(e => e.name)`)
	raw, gz := 0, 0
	for _, s := range scripts {
		resp, err := http.Get(s)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var buf bytes.Buffer
		w, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		_, _ = w.Write(b)
		_ = w.Close()
		raw += len(b)
		gz += buf.Len()
	}
	return len(scripts), float64(raw) / 1024, float64(gz) / 1024
}
