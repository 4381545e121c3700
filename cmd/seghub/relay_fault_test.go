package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	eventrelayv1 "github.com/seghub/seghub/gen/seghub/eventrelay/v1"
	"github.com/seghub/seghub/services/destsim"
)

// startReplica starts another process of service svc under name, listening
// on addr (the gateway keeps routing to the first one).
func (s *split) startReplica(name, svc, addr string) {
	s.t.Helper()
	cmd := exec.Command(s.bin, "serve", svc)
	cmd.Env = append(append([]string(nil), s.env...), "SEGHUB_GRPC_ADDR="+addr, "SEGHUB_DATA_DIR="+filepath.Join(s.t.TempDir(), name))
	buf := &lockedBuffer{}
	cmd.Stdout = buf
	cmd.Stderr = buf
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	s.procs[name] = cmd
	s.logs[name] = buf
	s.mu.Unlock()
}

// TestKillOneOfTwoDeliveringRelays runs two eventrelay replicas in split mode
// that share the event partitions, delivering to analytics on the simulator
// with per-request latency while events keep coming in. The replica that
// only delivers is killed (SIGKILL); the other takes its partitions over
// within 30 s (its leases lapse), and the destination ends holding every
// user's events exactly as sent: all of them, in order, none twice.
func TestKillOneOfTwoDeliveringRelays(t *testing.T) {
	sim := destsim.New(destsim.DemoCredentials())
	sim.SetLimits(destsim.Limits{AnalyticsPerMinute: -1, AnalyticsPerIdentityPerMinute: -1})
	simSrv := httptest.NewServer(sim)
	defer simSrv.Close()
	// The connection's bucket is not what the test is about: with the assumed
	// 15 000 events a minute, the backlog the kill leaves would drain slowly.
	s := startSplit(t, "SEGHUB_ANALYTICS_URL="+simSrv.URL, "SEGHUB_DESTINATION_RATES=analytics=6000000")
	started := time.Now()
	r := &running{httpAddr: s.httpAddr}
	key := s.adminKey
	second := freeAddr(t)
	s.startReplica("eventrelay-2", "eventrelay", second)

	code, body := r.do(t, "POST", "/v1/connections", key, `{"type":"analytics","name":"Analytics","credentials":{"app_id":"kill"}}`)
	if code != 200 {
		t.Fatalf("analytics: %d %v", code, body)
	}
	analytics := body["connection"].(map[string]any)["connection_id"].(string)
	if code, body = r.do(t, "POST", "/v1/event-routes", key, `{"connection_id":"`+analytics+`"}`); code != 200 {
		t.Fatalf("route: %d %v", code, body)
	}
	sim.SetFaults(destsim.Faults{LatencyMS: 150})

	conn, err := grpc.NewClient(second, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(bearerCreds(key)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	replica2 := eventrelayv1.NewEventRelayServiceClient(conn)
	deliveredBy2 := func() uint64 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		sinks, err := replica2.ListSinks(ctx, &eventrelayv1.ListSinksRequest{})
		if err != nil || len(sinks.GetSinks()) != 1 {
			return 0
		}
		return sinks.GetSinks()[0].GetDelivered()
	}

	// Each round sends the next event of every user, through the gateway to
	// the first replica; a round is resent until it is acknowledged (the
	// event ids make a resend harmless).
	const users = 24
	var mu sync.Mutex
	rounds := 0 // acknowledged
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			var batch []string
			for u := range users {
				batch = append(batch, fmt.Sprintf(`{"event_id":"kr-%d-%d","source":"api","user_id":"k%d","name":"Ping","properties":{"n":%d}}`, u, i, u, i))
			}
			if code, _ := r.do(t, "POST", "/v1/events:trackBatch", key, `{"events":[`+strings.Join(batch, ",")+`]}`); code != 200 {
				continue
			}
			mu.Lock()
			i++
			rounds = i
			mu.Unlock()
		}
	}()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-done
	}()

	// received is every user's n values in arrival order at the destination
	// (the simulator drops repeated idempotency keys).
	received := func() map[string][]int {
		out := map[string][]int{}
		for _, e := range sim.Snapshot().Analytics["kill"] {
			u, _ := e["identity"].(string)
			p, _ := e["properties"].(map[string]any)
			n, _ := p["n"].(float64)
			out[u] = append(out[u], int(n))
		}
		return out
	}
	waitFor(t, 60*time.Second, func() bool { return deliveredBy2() >= 50 }, "the second replica to deliver its partitions' events")
	before := deliveredBy2()
	s.kill("eventrelay-2")
	killed := time.Now()
	mu.Lock()
	firstAfter := rounds // the first round acknowledged after the kill
	mu.Unlock()
	t.Logf("kill -9 of the second replica %v after the start, once it had delivered %d events", killed.Sub(started).Round(100*time.Millisecond), before)

	// Every user hears of a round sent after the kill once the survivor
	// delivers the dead replica's partitions too.
	var takeover time.Duration
	waitFor(t, 60*time.Second, func() bool {
		got := received()
		for _, ns := range got {
			if ns[len(ns)-1] < firstAfter {
				return false
			}
		}
		takeover = time.Since(killed)
		return len(got) == users
	}, "every user's events sent after the kill at the destination")
	t.Logf("partitions taken over: every user receiving again %v after the kill", takeover.Round(100*time.Millisecond))
	if takeover > 30*time.Second {
		t.Fatalf("the dead replica's partitions moved after %v, want within 30 s", takeover)
	}
	close(stop)
	<-done
	mu.Lock()
	total := rounds
	mu.Unlock()
	waitFor(t, 60*time.Second, func() bool {
		got := received()
		for u := range users {
			if len(got[fmt.Sprintf("k%d", u)]) < total {
				return false
			}
		}
		return true
	}, fmt.Sprintf("all %d rounds of %d users at the destination", total, users))
	time.Sleep(time.Second) // anything duplicated or late would land now
	got := received()
	for u := range users {
		ns := got[fmt.Sprintf("k%d", u)]
		if len(ns) != total {
			t.Fatalf("user k%d: %d events at the destination, want %d: %v", u, len(ns), total, ns)
		}
		for i, n := range ns {
			if n != i {
				t.Fatalf("user k%d: event %d is n=%d, want %d (lost, duplicated or reordered): %v", u, i, n, i, ns)
			}
		}
	}
	t.Logf("%d users × %d events exact and in order; %d sent after the kill", users, total, total-firstAfter)
}
