// Command eventload measures the event relay in one run on one machine:
// durable ingest over StreamTrack against raw JetStream async publish of the
// same payloads to the same (embedded) server, and delivery lag to the
// analytics simulator at a fixed offered rate.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/seghub/seghub/bench/internal/harness"
	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
	eventrelayv1 "github.com/seghub/seghub/gen/seghub/eventrelay/v1"
	"github.com/seghub/seghub/pkg/app"
	"github.com/seghub/seghub/pkg/config"
	"github.com/seghub/seghub/pkg/destinations"
	"github.com/seghub/seghub/services/connector"
	"github.com/seghub/seghub/services/destsim"
	"github.com/seghub/seghub/services/eventrelay"
)

func main() {
	events := flag.Int("events", 200000, "events of the ingest phase (each side)")
	batch := flag.Int("batch", 100, "events per StreamTrack message")
	streams := flag.Int("streams", 4, "concurrent StreamTrack streams")
	rate := flag.Int("rate", 10000, "offered events/s of the lag phase")
	dur := flag.Duration("d", 20*time.Second, "duration of the lag phase")
	users := flag.Int("users", 1000, "distinct users")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the ingest phase here")
	scale := flag.Bool("scaleout", false, "instead: measure delivery from 1 then 2 eventrelay replicas in split mode (PostgreSQL and external NATS)")
	replicas := flag.String("replicas", "1,2", "scale-out: the eventrelay replica counts to measure, in order")
	backlog := flag.Int("backlog", 40000, "scale-out: events stored, then delivered")
	latency := flag.Duration("latency", 2*time.Second, "scale-out: the destination's added latency per request")
	bin := flag.String("bin", "", "scale-out: the seghub binary (default: built from ../cmd/seghub)")
	pg := flag.String("pg", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "scale-out: PostgreSQL admin URL (a database is created and dropped per run)")
	natsURL := flag.String("nats", "nats://127.0.0.1:4222", "scale-out: NATS JetStream URL")
	dest := flag.String("dest", "analytics", "scale-out: analytics (bulk track, 1 000 events a request) or appcues (one request per event)")
	flag.Parse()
	profile = *cpuprofile
	if *scale {
		var ks []int
		for _, f := range strings.Split(*replicas, ",") {
			k, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || k < 1 {
				fmt.Fprintf(os.Stderr, "eventload: -replicas %q: want counts like 1,2\n", *replicas)
				os.Exit(2)
			}
			ks = append(ks, k)
		}
		if *dest != "analytics" && *dest != "appcues" {
			fmt.Fprintf(os.Stderr, "eventload: -dest %q: analytics or appcues\n", *dest)
			os.Exit(2)
		}
		if err := scaleOut(scaleOptions{bin: *bin, pg: *pg, nats: *natsURL, replicas: ks, backlog: *backlog, users: *users, latency: *latency, dest: *dest}); err != nil {
			fmt.Fprintln(os.Stderr, "eventload:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*events, *batch, *streams, *rate, *dur, *users); err != nil {
		fmt.Fprintln(os.Stderr, "eventload:", err)
		os.Exit(1)
	}
}

// profile is where the ingest phase's CPU profile goes ("" for none).
var profile string

// arrivals records when each event reached the analytics API.
type arrivals struct {
	mu sync.Mutex
	at map[string]time.Time
}

// wrap records arrivals of accepted track requests in front of the simulator.
func (a *arrivals) wrap(sim http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/track" {
			sim.ServeHTTP(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		now := time.Now()
		rec := httptest.NewRecorder()
		r.Body = io.NopCloser(bytes.NewReader(body))
		sim.ServeHTTP(rec, r)
		if rec.Code == 200 {
			var in struct {
				Events []struct {
					Key string `json:"idempotency_key"`
				} `json:"events"`
			}
			_ = json.Unmarshal(body, &in)
			a.mu.Lock()
			for _, e := range in.Events {
				if _, ok := a.at[e.Key]; !ok {
					a.at[e.Key] = now
				}
			}
			a.mu.Unlock()
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	})
}

func run(total, batch, streams, rate int, dur time.Duration, users int) error {
	ctx := context.Background()
	sim := destsim.New(destsim.DemoCredentials())
	sim.SetLimits(destsim.Limits{AnalyticsPerMinute: 10 * rate * 60}) // the bench measures seghub, not the quota
	arr := &arrivals{at: map[string]time.Time{}}
	srv := httptest.NewServer(arr.wrap(sim))
	defer srv.Close()
	proc, err := harness.Start(ctx, func(c *config.Config) { c.AnalyticsURL = srv.URL },
		func(ctx context.Context, p *app.Platform) (app.Service, error) { return connector.New(ctx, p) },
		func(ctx context.Context, p *app.Platform) (app.Service, error) {
			return eventrelay.NewWithOptions(ctx, p, eventrelay.Options{
				// The analytics connection's bucket (events a minute) sized for the offered rate.
				Rate: func(destinations.Type) (int, int) { return 1_200_000, 20_000 },
			})
		})
	if err != nil {
		return err
	}
	defer proc.Stop()
	conn, err := proc.Dial()
	if err != nil {
		return err
	}
	admin, err := proc.DialAdmin()
	if err != nil {
		return err
	}
	ev := eventrelayv1.NewEventRelayServiceClient(conn)
	fmt.Printf("machine: %d events per phase, %d per message, %d streams\n", total, batch, streams)

	// Ingest: StreamTrack, no sink yet (nothing competes with ingest).
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			return err
		}
		_ = pprof.StartCPUProfile(f)
	}
	seghubRate, err := ingest(ctx, ev, "ing", total, batch, streams, users)
	if profile != "" {
		pprof.StopCPUProfile()
	}
	if err != nil {
		return err
	}
	rawRate, err := rawPublish(ctx, proc.P, "raw", total, users, streams)
	if err != nil {
		return err
	}
	fmt.Printf("ingest: seghub StreamTrack %.0f events/s; raw JetStream PublishAsync %.0f events/s; ratio %.2f\n", seghubRate, rawRate, seghubRate/rawRate)

	// Lag: route to analytics, offer rate events/s for dur.
	cn := connectorv1.NewConnectorServiceClient(admin)
	c, err := cn.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "analytics", Name: "bench", Credentials: map[string]string{"app_id": "bench"}})
	if err != nil {
		return err
	}
	if _, err := eventrelayv1.NewEventRelayServiceClient(admin).CreateRoute(ctx, &eventrelayv1.CreateRouteRequest{ConnectionId: c.GetConnection().GetConnectionId()}); err != nil {
		return err
	}
	time.Sleep(3 * time.Second) // the sink starts
	sent, err := offer(ctx, ev, rate, dur, users)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		arr.mu.Lock()
		n := len(arr.at)
		arr.mu.Unlock()
		if n >= len(sent) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	var lat harness.Latencies
	arr.mu.Lock()
	for id, t0 := range sent {
		if t1, ok := arr.at[id]; ok {
			lat = append(lat, t1.Sub(t0))
		}
	}
	arr.mu.Unlock()
	fmt.Printf("lag at %d events/s offered for %v: delivered %d of %d; ingest→analytics %v; max %v\n",
		rate, dur, len(lat), len(sent), lat, lat.Quantile(1))
	if len(lat) != len(sent) {
		return errors.New("not every event was delivered")
	}
	return nil
}

func event(prefix string, i, users int) *eventrelayv1.Event {
	p, _ := structpb.NewStruct(map[string]any{"plan": "pro", "seats": float64(i % 50), "source": "bench"})
	return &eventrelayv1.Event{EventId: prefix + strconv.Itoa(i), Source: "api", UserId: "user-" + strconv.Itoa(i%users), Name: "Report Exported", Properties: p}
}

// ingest sends total events over streams StreamTrack streams and returns
// acknowledged events/s.
func ingest(ctx context.Context, ev eventrelayv1.EventRelayServiceClient, prefix string, total, batch, streams, users int) (float64, error) {
	msgs := make([][]*eventrelayv1.Event, 0, total/batch+1)
	for i := 0; i < total; i += batch {
		var m []*eventrelayv1.Event
		for j := i; j < min(i+batch, total); j++ {
			m = append(m, event(prefix, j, users))
		}
		msgs = append(msgs, m)
	}
	var next atomic.Int64
	var acked atomic.Int64
	errc := make(chan error, streams)
	start := time.Now()
	for range streams {
		go func() {
			st, err := ev.StreamTrack(ctx)
			if err != nil {
				errc <- err
				return
			}
			done := make(chan error, 1)
			go func() {
				for {
					r, err := st.Recv()
					if err == io.EOF {
						done <- nil
						return
					}
					if err != nil {
						done <- err
						return
					}
					acked.Add(int64(r.GetAccepted() + r.GetDuplicates()))
				}
			}()
			for {
				i := next.Add(1) - 1
				if int(i) >= len(msgs) {
					break
				}
				if err := st.Send(&eventrelayv1.StreamTrackRequest{Sequence: uint64(i), Events: msgs[i]}); err != nil {
					break
				}
			}
			_ = st.CloseSend()
			errc <- <-done
		}()
	}
	for range streams {
		if err := <-errc; err != nil {
			return 0, err
		}
	}
	took := time.Since(start)
	if int(acked.Load()) != total {
		return 0, fmt.Errorf("acknowledged %d of %d", acked.Load(), total)
	}
	return float64(total) / took.Seconds(), nil
}

// rawPublish publishes the same envelopes seghub stores (same JSON size and
// dedup header) to a stream of its own on the same server, from as many
// publishers as seghub had streams.
func rawPublish(ctx context.Context, p *app.Platform, prefix string, total, users, publishers int) (float64, error) {
	js, err := jetstream.New(p.Bus.Conn, jetstream.WithPublishAsyncMaxPending(64<<10))
	if err != nil {
		return 0, err
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "BENCH_RAW", Subjects: []string{"benchraw.>"}, Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute}); err != nil {
		return 0, err
	}
	payloads := make([][]byte, total)
	for i := range payloads {
		e := event(prefix, i, users)
		payloads[i], _ = json.Marshal(map[string]any{"id": e.GetEventId(), "env": "env_bench", "src": "api", "user": e.GetUserId(), "name": e.GetName(),
			"ts": time.Now().UnixMicro(), "props": e.GetProperties().AsMap(), "fwd": true, "rcv": time.Now().UnixMicro()})
	}
	// As many publishers as seghub has streams, each waiting for its acks.
	start := time.Now()
	errc := make(chan error, publishers)
	for w := range publishers {
		go func() {
			var futures []jetstream.PubAckFuture
			for i := w; i < total; i += publishers {
				m := &nats.Msg{Subject: "benchraw.env_bench.api", Data: payloads[i], Header: nats.Header{jetstream.MsgIDHeader: []string{"env_bench/" + prefix + strconv.Itoa(i)}}}
				f, err := js.PublishMsgAsync(m, jetstream.WithStallWait(10*time.Second))
				if err != nil {
					errc <- err
					return
				}
				futures = append(futures, f)
			}
			for _, f := range futures {
				select {
				case <-f.Ok():
				case err := <-f.Err():
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	for range publishers {
		if err := <-errc; err != nil {
			return 0, err
		}
	}
	return float64(total) / time.Since(start).Seconds(), nil
}

// offer sends rate events/s (in 10 ms ticks) for dur over one StreamTrack
// stream and returns each event's send time.
func offer(ctx context.Context, ev eventrelayv1.EventRelayServiceClient, rate int, dur time.Duration, users int) (map[string]time.Time, error) {
	st, err := ev.StreamTrack(ctx)
	if err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() {
		for {
			if _, err := st.Recv(); err != nil {
				if err == io.EOF {
					err = nil
				}
				done <- err
				return
			}
		}
	}()
	sent := map[string]time.Time{}
	perTick := rate / 100
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	end := time.Now().Add(dur)
	n := 0
	for seq := uint64(0); time.Now().Before(end); seq++ {
		<-tick.C
		var m []*eventrelayv1.Event
		now := time.Now()
		for range perTick {
			e := event("lag", n, users)
			sent[e.GetEventId()] = now
			m = append(m, e)
			n++
		}
		if err := st.Send(&eventrelayv1.StreamTrackRequest{Sequence: seq, Events: m}); err != nil {
			return nil, err
		}
	}
	_ = st.CloseSend()
	return sent, <-done
}
