package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/seghub/seghub/bench/internal/harness"
	eventrelayv1 "github.com/seghub/seghub/gen/seghub/eventrelay/v1"
	"github.com/seghub/seghub/services/destsim"
)

// scaleOptions configure the scale-out measurement.
type scaleOptions struct {
	bin, pg, nats string
	replicas      []int
	backlog       int
	users         int
	latency       time.Duration
	// dest is analytics (bulk track requests) or appcues (one request per
	// event).
	dest string
}

// arrivalLog records how many events each accepted track request carried,
// and when.
type arrivalLog struct {
	mu   sync.Mutex
	hits []arrival
}

type arrival struct {
	at time.Time
	n  int
}

func (a *arrivalLog) wrap(sim http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/track" && !(r.Method == "POST" && strings.HasSuffix(r.URL.Path, "/events")) {
			sim.ServeHTTP(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		rec := httptest.NewRecorder()
		sim.ServeHTTP(rec, r)
		if rec.Code == 200 && rec.Header().Get("Idempotent-Replayed") == "" {
			n := 1 // an Appcues event
			if r.URL.Path == "/api/track" {
				var in struct {
					Events []json.RawMessage `json:"events"`
				}
				_ = json.Unmarshal(body, &in)
				n = len(in.Events)
			}
			a.mu.Lock()
			a.hits = append(a.hits, arrival{at: time.Now(), n: n})
			a.mu.Unlock()
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	})
}

// when is the time the cumulative count reached n (zero: not yet).
func (a *arrivalLog) when(n int) time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	sum := 0
	for _, h := range a.hits {
		if sum += h.n; sum >= n {
			return h.at
		}
	}
	return time.Time{}
}

func (a *arrivalLog) total() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	sum := 0
	for _, h := range a.hits {
		sum += h.n
	}
	return sum
}

// scaleOut measures delivery to analytics on the simulator, which answers
// each request after o.latency, from 1, then 2 (o.replicas) eventrelay
// replicas in split mode: a backlog of events is stored (delivery starts
// meanwhile), and the delivered rate is read at the destination from when
// all of it is stored to when 90 % of it has arrived.
func scaleOut(o scaleOptions) error {
	if o.bin == "" {
		dir, err := os.MkdirTemp("", "eventload-bin")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		o.bin = filepath.Join(dir, "seghub")
		build := exec.Command("go", "build", "-o", o.bin, "./cmd/seghub")
		build.Dir = ".."
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("build seghub: %v\n%s", err, out)
		}
	}
	fmt.Printf("scale-out: %d events of %d users stored, then delivered to %s answering each request after %v\n", o.backlog, o.users, o.dest, o.latency)
	var rates []float64
	for _, k := range o.replicas {
		rate, err := scaleRun(o, k)
		if err != nil {
			return fmt.Errorf("%d replicas: %w", k, err)
		}
		rates = append(rates, rate)
	}
	for i, k := range o.replicas {
		fmt.Printf("replicas %d: %.0f events/s (×%.2f of %d replica)\n", k, rates[i], rates[i]/rates[0], o.replicas[0])
	}
	return nil
}

func scaleRun(o scaleOptions, replicas int) (float64, error) {
	ctx := context.Background()
	sim := destsim.New(destsim.DemoCredentials())
	sim.SetLimits(destsim.Limits{AnalyticsPerMinute: -1, AnalyticsPerIdentityPerMinute: -1, IdempotencyKeys: -1})
	arr := &arrivalLog{}
	srv := httptest.NewServer(arr.wrap(sim))
	defer srv.Close()
	s, err := harness.StartSplit(ctx, harness.SplitOptions{Bin: o.bin, PostgresURL: o.pg, NATSURL: o.nats, Relays: replicas,
		// The bench measures seghub, not the assumed quota of 15 000 events a minute.
		Env: []string{"SEGHUB_ANALYTICS_URL=" + srv.URL, "SEGHUB_APPCUES_URL=" + srv.URL, "SEGHUB_DESTINATION_RATES=analytics=100000000,appcues=100000000", "SEGHUB_LOG_LEVEL=warn"}})
	if err != nil {
		return 0, err
	}
	defer s.Stop()
	rest := func(method, path, body string) (map[string]any, error) {
		req, _ := http.NewRequest(method, "http://"+s.HTTPAddr+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+s.AdminKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		if resp.StatusCode != 200 {
			return nil, fmt.Errorf("%s %s: %d %v", method, path, resp.StatusCode, out)
		}
		return out, nil
	}
	create := `{"type":"analytics","name":"bench","credentials":{"app_id":"bench"}}`
	if o.dest == "appcues" {
		// Events sent as the user id itself: no identity lookups.
		create = `{"type":"appcues","name":"bench","credentials":{"account_id":"demo","api_key":"demo-key","api_secret":"demo-secret"},"settings":{"send_events":true,"identity_property":"user_id"}}`
	}
	c, err := rest("POST", "/v1/connections", create)
	if err != nil {
		return 0, err
	}
	conn := c["connection"].(map[string]any)["connection_id"].(string)
	if _, err := rest("POST", "/v1/event-routes", `{"connection_id":"`+conn+`"}`); err != nil {
		return 0, err
	}
	// The replicas share the partitions within a few lease renewals (2 s each).
	time.Sleep(10 * time.Second)
	sim.SetFaults(destsim.Faults{LatencyMS: int(o.latency.Milliseconds())})

	var clients []eventrelayv1.EventRelayServiceClient
	for _, a := range s.RelayAddrs {
		cc, err := grpc.NewClient(a, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(harness.Bearer(s.AdminKey)))
		if err != nil {
			return 0, err
		}
		defer cc.Close()
		clients = append(clients, eventrelayv1.NewEventRelayServiceClient(cc))
	}
	t0 := time.Now()
	const batch = 500
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w * batch; i < o.backlog; i += 4 * batch {
				var evs []*eventrelayv1.Event
				for j := i; j < min(i+batch, o.backlog); j++ {
					evs = append(evs, event("so", j, o.users))
				}
				if _, err := clients[0].TrackBatch(ctx, &eventrelayv1.TrackBatchRequest{Events: evs}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	stored := time.Since(t0)
	// From here on every partition has its whole backlog stored.
	atStored, storedAt := arr.total(), time.Now()
	deadline := time.Now().Add(10 * time.Minute)
	for arr.total() < o.backlog {
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%d of %d events delivered in 10 minutes", arr.total(), o.backlog)
		}
		time.Sleep(200 * time.Millisecond)
	}
	done := time.Since(t0)
	t10, t90 := arr.when(o.backlog/10), arr.when(o.backlog*9/10)
	early := float64(o.backlog*8/10) / t90.Sub(t10).Seconds()
	// The rate once everything is stored, to 90 % (the tail is a few
	// partitions' last batches).
	rate := early
	if atStored < o.backlog*8/10 {
		rate = float64(o.backlog*9/10-atStored) / t90.Sub(storedAt).Seconds()
	}
	snap := sim.Snapshot()
	held := len(snap.Analytics["bench"])
	if o.dest == "appcues" {
		held = len(snap.AppcuesEvents["demo"])
	}
	var per []string
	for i, cl := range clients {
		sinks, err := cl.ListSinks(ctx, &eventrelayv1.ListSinksRequest{})
		if err != nil || len(sinks.GetSinks()) != 1 {
			return 0, fmt.Errorf("replica %d's sinks: %v %v", i+1, sinks, err)
		}
		per = append(per, strconv.FormatUint(sinks.GetSinks()[0].GetDelivered(), 10))
	}
	fmt.Printf("replicas %d: stored %d events in %v (%d delivered by then); all delivered %v after the first was sent; 10 %%→90 %% at %.0f events/s; from stored to 90 %% at %.0f events/s; destination holds %d distinct; delivered per replica: %s\n",
		replicas, o.backlog, stored.Round(time.Millisecond), atStored, done.Round(time.Millisecond), early, rate, held, strings.Join(per, ", "))
	if held != o.backlog {
		return 0, fmt.Errorf("the destination holds %d distinct events, want %d", held, o.backlog)
	}
	return rate, nil
}
