package computed

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/seghub/seghub/pkg/natsbus"
)

// The direct reader hands over exactly what the ordered consumer does — the
// same sequences and data of the environment, in order — whatever the
// chunking: across gaps (deleted messages, read again with headers),
// reads ending mid-chunk, a callback stopping mid-chunk, and with replay
// subjects present (then it reads through the consumer).
func TestDirectReaderMatchesConsumer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bus, err := natsbus.Connect(ctx, natsbus.Options{StoreDir: t.TempDir(), Name: "direct"})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	st, err := bus.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "SEGHUB_EVENTS", Subjects: []string{"seghub.events.>"}, AllowDirect: true})
	if err != nil {
		t.Fatal(err)
	}
	const env = "env_direct"
	publish := func(n int, subject func(i int) (string, string)) {
		t.Helper()
		for i := range n {
			subj, e := subject(i)
			data, _ := json.Marshal(map[string]any{"id": fmt.Sprint(i), "env": e, "src": "api", "user": fmt.Sprintf("u%d", i%37), "name": "A", "ts": 1, "rcv": 1})
			if _, err := bus.JS.Publish(ctx, subj, data); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(2000, func(i int) (string, string) {
		if i%5 == 0 {
			return "seghub.events.env_other.1.api", "env_other"
		}
		return fmt.Sprintf("seghub.events.%s.%d.api", env, i%16), env
	})
	for _, seq := range []uint64{3, 150, 151, 152, 999, 1000, 1777} {
		if err := st.DeleteMsg(ctx, seq); err != nil {
			t.Fatal(err)
		}
	}

	type got struct {
		seq  uint64
		data string
	}
	// mine keeps the environment's events (a direct read passes the
	// others too; the tally tells them apart by their envelopes).
	mine := func(out *[]got) func(seq uint64, subject string, data []byte) bool {
		return func(seq uint64, subject string, data []byte) bool {
			var e struct{ Env string }
			if json.Unmarshal(data, &e) == nil && e.Env == env {
				*out = append(*out, got{seq, string(data)})
			}
			return false
		}
	}
	// plan reads from 1 through each end in turn; a negative end stops
	// in the callback at that sequence (or the first one after it).
	readAll := func(t *testing.T, r eventReader, plan []int64) []got {
		t.Helper()
		defer r.close()
		var out []got
		for _, end := range plan {
			to, stopAt := uint64(end), uint64(0)
			if end < 0 {
				to, stopAt = 2000, uint64(-end)
			}
			keep := mine(&out)
			through, err := r.read(ctx, to, func(seq uint64, subject string, data []byte) bool {
				keep(seq, subject, data)
				return stopAt > 0 && seq >= stopAt
			})
			if err != nil {
				t.Fatal(err)
			}
			if stopAt == 0 && through != to || stopAt > 0 && (through < stopAt || through > stopAt+3) {
				t.Fatalf("read through %d, want %d (stop at %d)", through, to, stopAt)
			}
			if r.at() != through+1 {
				t.Fatalf("next read starts at %d, want %d", r.at(), through+1)
			}
		}
		return out
	}
	want := readAll(t, newStreamReader(st, "seghub.events."+env+".>", 1), []int64{2000})
	if len(want) != 2000-400-6 { // 400 of env_other, 6 of the deleted are the environment's
		t.Fatalf("the consumer read %d events of the environment", len(want))
	}
	for _, getter := range []struct {
		name string
		dial func() (net.Conn, error)
	}{{"shared client", nil}, {"own connections", bus.InProcessDialer()}} {
		for _, tc := range []struct {
			name    string
			chunk   uint64
			workers int
			plan    []int64
		}{
			{"one chunk", 5000, 1, []int64{2000}},
			{"small chunks, several workers", 64, 3, []int64{2000}},
			{"reads ending mid-chunk", 100, 2, []int64{149, 150, 700, 1001, 2000}},
			{"stopped by the callback", 128, 4, []int64{-151, -900, -1500, 2000}},
		} {
			t.Run(getter.name+"/"+tc.name, func(t *testing.T) {
				r := newEventReader(bus.JS, getter.dial, st, "seghub.events.", env, 1)
				d, ok := r.(*directReader)
				if !ok {
					t.Fatalf("reader %T, want a direct reader", r)
				}
				d.chunk, d.workers = tc.chunk, tc.workers
				if got := readAll(t, r, tc.plan); !slices.Equal(got, want) {
					t.Fatalf("direct read %d events, differing from the consumer's %d", len(got), len(want))
				}
			})
		}
	}

	// A replay of the environment in the stream: the read goes through the
	// consumer, which skips it by subject (the tally's part), so the
	// events read are the consumer's.
	publish(1, func(int) (string, string) { return "seghub.events." + env + ".3._replay.conn_1", env })
	r := newEventReader(bus.JS, bus.InProcessDialer(), st, "seghub.events.", env, 1)
	if ok, err := r.(*directReader).usable(ctx); err != nil || ok {
		t.Fatalf("direct read usable with a replay in the stream: %v, %v", ok, err)
	}
	n := 0
	if _, err := r.read(ctx, 2001, func(seq uint64, subject string, data []byte) bool {
		if strings.HasPrefix(subject, "seghub.events."+env+".") {
			n++
		}
		return false
	}); err != nil {
		t.Fatal(err)
	}
	if n != len(want)+1 {
		t.Fatalf("with a replay: %d messages of the environment read with their subjects, want %d", n, len(want)+1)
	}
	r.close()
}

func TestWireParsing(t *testing.T) {
	for _, tc := range []struct {
		line string
		n    int
		rest string
		ok   bool
	}{
		{"MSG _INBOX.x 1 215", 215, "MSG _INBOX.x 1", true},
		{"HMSG _INBOX.x 1 22 240", 240, "HMSG _INBOX.x 1 22", true},
		{"MSG _INBOX.x 1 ", 0, "", false},
		{"MSG _INBOX.x 1 2x", 0, "", false},
		{"MSG", 0, "", false},
		{"MSG a 1 99999999999999", 0, "", false},
	} {
		n, rest, err := lastNumber([]byte(tc.line))
		if (err == nil) != tc.ok || tc.ok && (n != tc.n || string(rest) != tc.rest) {
			t.Errorf("lastNumber(%q) = %d, %q, %v", tc.line, n, rest, err)
		}
	}
	for _, tc := range []struct {
		hdr          string
		status       string
		seq, lastSeq uint64
	}{
		{"NATS/1.0 204 EOB\r\nNats-Num-Pending: 0\r\nNats-Last-Sequence: 123\r\n\r\n", "204", 0, 123},
		{"NATS/1.0 404 Message Not Found\r\n\r\n", "404", 0, 0},
		{"NATS/1.0\r\nNats-Stream: S\r\nNats-Subject: a.b\r\nNats-Sequence: 77\r\nNats-Time-Stamp: x\r\n\r\n", "", 77, 0},
	} {
		status, seq, last := parseDirectHeader([]byte(tc.hdr))
		if status != tc.status || seq != tc.seq || last != tc.lastSeq {
			t.Errorf("parseDirectHeader(%q) = %q, %d, %d", tc.hdr, status, seq, last)
		}
	}
}
