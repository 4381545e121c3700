package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/seghub/seghub/pkg/app/apptest"
	"github.com/seghub/seghub/pkg/destinations"
	"github.com/seghub/seghub/pkg/store/storetest"
	"github.com/seghub/seghub/services/destsim"
)

// split is seghub in split mode: one process per service on loopback, on a
// fresh PostgreSQL database and the external NATS JetStream.
type split struct {
	t        *testing.T
	bin      string
	env      []string
	addrs    map[string]string
	httpAddr string
	adminKey string
	procs    map[string]*exec.Cmd
	mu       sync.Mutex
	logs     map[string]*lockedBuffer
}

// handedOut remembers the addresses freeAddr gave: the kernel may offer a
// just-closed port again, and two services of one split must not share one.
var handedOut sync.Map

func freeAddr(t *testing.T) string {
	t.Helper()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		if _, taken := handedOut.LoadOrStore(addr, true); !taken {
			return addr
		}
	}
}

// buildBinary builds ./cmd/seghub once per test binary.
var buildOnce = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "seghub-e2e-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "seghub")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

func startSplit(t *testing.T, extraEnv ...string) *split {
	t.Helper()
	if testing.Short() {
		t.Skip("split mode builds and starts six processes; skipped with -short")
	}
	nurl := apptest.ExternalNATSURL(t)
	dbURL := storetest.PostgresURL(t)
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	s := &split{t: t, bin: bin, addrs: map[string]string{}, procs: map[string]*exec.Cmd{}, logs: map[string]*lockedBuffer{}, adminKey: "sghk_e2e_admin_key_0123456789ab"}
	for _, svc := range roles[1:] {
		s.addrs[svc] = freeAddr(t)
	}
	s.httpAddr = freeAddr(t)
	s.env = append(os.Environ(),
		"SEGHUB_DATABASE_URL="+dbURL,
		"SEGHUB_NATS_URL="+nurl,
		fmt.Sprintf("SEGHUB_BUS_NAMESPACE=e2e%d", time.Now().UnixNano()),
		"SEGHUB_SECRET_KEY="+base64.StdEncoding.EncodeToString(key),
		"SEGHUB_INTERNAL_KEY=internal-"+base64.RawURLEncoding.EncodeToString(key[:24]),
		"SEGHUB_ADMIN_KEY="+s.adminKey,
		"SEGHUB_ADMIN_ADDR="+s.addrs["gateway"],
		"SEGHUB_CONNECTOR_ADDR="+s.addrs["connector"],
		"SEGHUB_SEGMENTSYNC_ADDR="+s.addrs["segmentsync"],
		"SEGHUB_EVENTRELAY_ADDR="+s.addrs["eventrelay"],
		"SEGHUB_TARGETING_ADDR="+s.addrs["targeting"],
		"SEGHUB_HTTP_ADDR="+s.httpAddr,
		"SEGHUB_LOG_LEVEL=info",
		// The test's destination simulators listen on loopback.
		"SEGHUB_DESTINATION_ALLOW=127.0.0.0/8,::1",
	)
	s.env = append(s.env, extraEnv...)
	for _, svc := range roles[1:] {
		s.start(svc)
	}
	s.waitReady()
	t.Cleanup(s.stopAll)
	return s
}

func (s *split) start(svc string) {
	s.t.Helper()
	cmd := exec.Command(s.bin, "serve", svc)
	cmd.Env = append(append([]string(nil), s.env...), "SEGHUB_GRPC_ADDR="+s.addrs[svc], "SEGHUB_DATA_DIR="+filepath.Join(s.t.TempDir(), svc))
	buf := &lockedBuffer{}
	cmd.Stdout = buf
	cmd.Stderr = buf
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	s.procs[svc] = cmd
	s.logs[svc] = buf
	s.mu.Unlock()
}

// kill stops one service abruptly (SIGKILL), as a crash would.
func (s *split) kill(svc string) {
	s.mu.Lock()
	cmd := s.procs[svc]
	s.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_, _ = cmd.Process.Wait()
}

func (s *split) stopAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for svc, cmd := range s.procs {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _, _ = cmd.Process.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			s.t.Errorf("%s did not stop on SIGTERM within 20s", svc)
		}
		if s.t.Failed() {
			s.t.Logf("--- %s log (tail) ---\n%s", svc, tail(s.logs[svc].String(), 40))
		}
	}
}

func tail(s string, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (s *split) waitReady() {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		resp, err := http.Get("http://" + s.httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-ctx.Done():
			for svc, l := range s.logs {
				s.t.Logf("--- %s ---\n%s", svc, tail(l.String(), 20))
			}
			s.t.Fatal("split mode not ready within 60s")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// TestSplitModeStarts runs every service as its own process on PostgreSQL
// and external NATS, with the gateway routing REST to each.
func TestSplitModeStarts(t *testing.T) {
	s := startSplit(t)
	r := &running{httpAddr: s.httpAddr}
	if code, _ := r.do(t, "GET", "/v1/whoami", s.adminKey, ""); code != 200 {
		t.Fatalf("whoami through split gateway: %d", code)
	}
	if code, _ := r.do(t, "GET", "/v1/environments", "", ""); code != 401 {
		t.Fatalf("no key: %d", code)
	}
}

// TestSplitScenario walks the product end to end in split mode: a segment
// arrives through a signed inbound webhook, another is created with members
// and identity properties, Appcues (the simulator) is connected and synced
// on a recurring schedule, and targeting answers membership and eligible
// product tours. Then segmentsync is killed (SIGKILL) in the middle of a
// larger sync and restarted: the destination ends holding exactly the
// segment. Appcues events come in through the signed webhook and reach
// analytics under their display names; eventrelay is killed (SIGKILL) during
// ingest and every acknowledged event is still delivered.
func TestSplitScenario(t *testing.T) {
	sim := destsim.New(destsim.DemoCredentials())
	simSrv := httptest.NewServer(sim)
	defer simSrv.Close()
	s := startSplit(t, "SEGHUB_APPCUES_URL="+simSrv.URL, "SEGHUB_ANALYTICS_URL="+simSrv.URL)
	r := &running{httpAddr: s.httpAddr}
	key := s.adminKey

	// 1. A segment pushed by an analytics tool.
	code, body := r.do(t, "POST", "/v1/connections", key, `{"type":"heap","name":"Heap"}`)
	if code != 200 {
		t.Fatalf("heap source: %d %v", code, body)
	}
	secret := body["signing_secret"].(string)
	path := body["connection"].(map[string]any)["webhook_path"].(string)
	wb := webhookBody("heap-7", "Heap: churn risk", "task-1", 1, page{n: 1, add: []string{"u1", "u2"}})
	if code, b := r.post(t, path, destinations.Sign(secret, time.Now(), wb), wb); code != 200 || b["applied"] != true {
		t.Fatalf("inbound webhook through the split gateway: %d %v", code, b)
	}

	// 2. Another segment with members and identity properties.
	code, body = r.do(t, "POST", "/v1/segments", key, `{"name":"Trial users"}`)
	if code != 200 {
		t.Fatalf("create segment: %d %v", code, body)
	}
	trial := body["segment"].(map[string]any)["segment_id"].(string)
	var users []string
	for i := 0; i < 20; i++ {
		users = append(users, fmt.Sprintf(`{"user_id":"t%d","properties":{"appcuesUserID":{"string_value":"ac-%d"}}}`, i, i))
	}
	if code, b := r.do(t, "POST", "/v1/users:upsert", key, `{"users":[`+strings.Join(users, ",")+`]}`); code != 200 {
		t.Fatalf("upsert: %d %v", code, b)
	}
	var ids []string
	for i := 0; i < 20; i++ {
		ids = append(ids, fmt.Sprintf(`"t%d"`, i))
	}
	if code, b := r.do(t, "POST", "/v1/segments/"+trial+"/members:add", key, `{"user_ids":[`+strings.Join(ids, ",")+`]}`); code != 200 {
		t.Fatalf("add members: %d %v", code, b)
	}

	// 3. Connect Appcues, enable a recurring sync, run it.
	code, body = r.do(t, "POST", "/v1/connections", key, `{"type":"appcues","name":"Appcues","credentials":{"account_id":"demo","api_key":"demo-key","api_secret":"demo-secret"},"settings":{"send_events":true}}`)
	if code != 200 {
		t.Fatalf("appcues: %d %v", code, body)
	}
	appcues := body["connection"].(map[string]any)["connection_id"].(string)
	appcuesSecret := body["signing_secret"].(string)
	code, body = r.do(t, "POST", "/v1/syncs", key, `{"segment_id":"`+trial+`","connection_id":"`+appcues+`","schedule":"SYNC_SCHEDULE_RECURRING"}`)
	if code != 200 {
		t.Fatalf("enable sync: %d %v", code, body)
	}
	syncID := body["sync"].(map[string]any)["sync_id"].(string)
	waitFor(t, 30*time.Second, func() bool {
		return len(appcuesHolders(sim, "[seghub] Trial users")) == 20
	}, "the sync to deliver 20 members to Appcues")
	// The name is frozen when the run that delivered them is recorded.
	waitFor(t, 30*time.Second, func() bool {
		_, body = r.do(t, "GET", "/v1/syncs/"+syncID, key, "")
		return body["sync"].(map[string]any)["frozen_display_name"] == "Trial users"
	}, "the sync's frozen display name")

	// 4. Targeting: membership and an eligible product tour.
	waitFor(t, 20*time.Second, func() bool {
		_, b := r.do(t, "GET", "/v1/targeting/segments/"+trial+"/members/t3", key, "")
		return b["is_member"] == true
	}, "targeting to see t3 in the trial segment")
	code, body = r.do(t, "POST", "/v1/experiences", key, `{"name":"Tour","type":"EXPERIENCE_TYPE_PRODUCT_TOUR","audience":{"match":{"conditions":[{"operator":"OPERATOR_IN_SEGMENT","segment_id":"`+trial+`"}]}}}`)
	if code != 200 {
		t.Fatalf("experience: %d %v", code, body)
	}
	_, body = r.do(t, "GET", "/v1/targeting/users/t3/experiences?type=EXPERIENCE_TYPE_PRODUCT_TOUR", key, "")
	if xs, _ := body["experiences"].([]any); len(xs) != 1 {
		t.Fatalf("eligible tours for t3: %v", body)
	}

	// 5. kill -9 segmentsync during a larger sync; a restart finishes it exactly.
	sim.SetFaults(destsim.Faults{LatencyMS: 40})
	code, body = r.do(t, "POST", "/v1/segments", key, `{"name":"Everyone"}`)
	big := body["segment"].(map[string]any)["segment_id"].(string)
	const n = 20000
	for i := 0; i < n; i += 5000 {
		var batch []string
		for j := i; j < i+5000; j++ {
			batch = append(batch, fmt.Sprintf(`"e%d"`, j))
		}
		if code, b := r.do(t, "POST", "/v1/segments/"+big+"/members:add", key, `{"user_ids":[`+strings.Join(batch, ",")+`]}`); code != 200 {
			t.Fatalf("add: %d %v", code, b)
		}
	}
	code, body = r.do(t, "POST", "/v1/syncs", key, `{"segment_id":"`+big+`","connection_id":"`+appcues+`","identity_property":"user_id","schedule":"SYNC_SCHEDULE_ONE_TIME"}`)
	if code != 200 {
		t.Fatalf("enable big sync: %d %v", code, body)
	}
	waitFor(t, 60*time.Second, func() bool { return len(appcuesHolders(sim, "[seghub] Everyone")) >= 3000 }, "part of the big sync")
	s.kill("segmentsync")
	held := len(appcuesHolders(sim, "[seghub] Everyone"))
	if held >= n {
		t.Fatalf("the sync finished before the kill (%d); the test proves nothing", held)
	}
	s.start("segmentsync")
	// The killed process's job is rescued by River (after RescueAfter) and
	// retried by the new process, which continues from the checkpoints.
	waitFor(t, 240*time.Second, func() bool { return len(appcuesHolders(sim, "[seghub] Everyone")) == n }, "the restarted process to finish the sync exactly")
	sim.SetFaults(destsim.Faults{})

	// 6. Appcues events relayed into analytics.
	code, body = r.do(t, "POST", "/v1/connections", key, `{"type":"analytics","name":"Analytics","credentials":{"app_id":"e2e"}}`)
	if code != 200 {
		t.Fatalf("analytics: %d %v", code, body)
	}
	analytics := body["connection"].(map[string]any)["connection_id"].(string)
	if code, body = r.do(t, "POST", "/v1/event-routes", key, `{"connection_id":"`+analytics+`"}`); code != 200 {
		t.Fatalf("route: %d %v", code, body)
	}
	ev := []byte(`[{"id":"ac-1","name":"appcues:flow_completed","timestamp":1795400000000,"user_id":"t3","attributes":{"flowId":"f-9","flowName":"Tour"}}]`)
	if code, b := r.postEvents(t, "/webhooks/appcues/"+appcues, destinations.Sign(appcuesSecret, time.Now(), ev), ev); code != 200 || b["accepted"] != float64(1) {
		t.Fatalf("appcues event webhook: %d %v", code, b)
	}
	analyticsHas := func(ids map[string]bool) func() bool {
		return func() bool {
			got := map[string]bool{}
			for _, e := range sim.Snapshot().Analytics["e2e"] {
				if k, _ := e["idempotency_key"].(string); ids[k] {
					got[k] = true
				}
			}
			return len(got) == len(ids)
		}
	}
	waitFor(t, 30*time.Second, analyticsHas(map[string]bool{"ac-1": true}), "the Appcues event in analytics")
	for _, e := range sim.Snapshot().Analytics["e2e"] {
		if e["idempotency_key"] == "ac-1" && e["event"] != "Flow Completed" {
			t.Fatalf("delivered as %v", e)
		}
	}

	// 7. kill -9 eventrelay while batches are in flight: every acknowledged
	// event arrives; unacknowledged ones are the client's to retry.
	var mu sync.Mutex
	acked := map[string]bool{}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			var batch []string
			for j := 0; j < 50; j++ {
				batch = append(batch, fmt.Sprintf(`{"event_id":"k%d-%d","source":"api","user_id":"t%d","name":"Ping"}`, i, j, j%20))
			}
			code, b := r.do(t, "POST", "/v1/events:trackBatch", key, `{"events":[`+strings.Join(batch, ",")+`]}`)
			if code != 200 {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			mu.Lock()
			for _, id := range b["event_ids"].([]any) {
				acked[id.(string)] = true
			}
			mu.Unlock()
		}
	}()
	waitFor(t, 30*time.Second, func() bool { return count() >= 1000 }, "ingest before the kill")
	s.kill("eventrelay")
	before := count()
	time.Sleep(time.Second)
	s.start("eventrelay")
	waitFor(t, 60*time.Second, func() bool { return count() >= before+1000 }, "ingest after the restart")
	close(stop)
	<-done
	mu.Lock()
	defer mu.Unlock()
	waitFor(t, 120*time.Second, analyticsHas(acked), fmt.Sprintf("all %d acknowledged events in analytics", len(acked)))
}

func waitFor(t *testing.T, d time.Duration, ok func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func appcuesHolders(sim *destsim.Sim, prop string) map[string]bool {
	out := map[string]bool{}
	for u, p := range sim.Snapshot().Appcues["demo"] {
		if p[prop] == true {
			out[u] = true
		}
	}
	return out
}
