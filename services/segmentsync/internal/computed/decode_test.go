package computed

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// The relay's subjects are <ns>.events.<env>.<partition>.<source> and, for a
// sink's second try of a stored event, <ns>.events.<env>.<partition>._replay.<conn>:
// only the first are events to count.
func TestDecodeSkipsReplays(t *testing.T) {
	e := New(Options{})
	data := []byte(`{"id":"ev1","env":"env_a","src":"appcues","user":"u1","name":"Flow Completed","ts":1764460800000,"rcv":1764460800000}`)
	for _, tc := range []struct {
		subject string
		want    bool
	}{
		{"seghub.events.env_a.3.appcues", true},
		{"seghub.events.env_a.3._replay.conn_1", false},
		{"seghub.events.env_a._replay.conn_1", false},
		{"other.events.env_a.3.appcues", false},
		{"seghub.events.env_a", false},
	} {
		ev, ok := e.decode(tc.subject, data)
		if ok != tc.want {
			t.Errorf("decode(%q) counted = %v, want %v", tc.subject, ok, tc.want)
			continue
		}
		if ok && (ev.Env != "env_a" || ev.User != "u1" || ev.Source != "appcues" || ev.Name != "Flow Completed" || ev.Time <= 0 || ev.Time > time.Now().UnixMilli()) {
			t.Errorf("decode(%q) = %+v", tc.subject, ev)
		}
	}
}

// The hand-written envelope scan reads what encoding/json reads, and fails
// where it fails.
func FuzzScanEnvelope(f *testing.F) {
	for _, s := range []string{
		`{"id":"ev1","env":"env_a","src":"appcues","user":"u1","name":"Flow Completed","ts":1764460800000000,"fwd":true,"rcv":1764460800000001}`,
		`{"id":"ev2","env":"env_a","src":"api","user":"ü","name":"x","ts":-5,"props":{"plan":"pro","n":2.5,"ok":true,"a":[1,{"b":null}]},"rcv":0}`,
		` { "env" : "e" , "user" : "u\"q" , "ts" : 1e3 } `,
		`{"env":"e","user":"u","props":null,"conn":"c","acid":"x"}`,
		`{"ENV":"e","user":"u"}`,
		`{"env":"e","user":"u","ts":01}`,
		`{"env":"e","user":"u","ts":12345678901234567890}`,
		`{"env":"e","user":"u"} x`,
		`{"env":"e","user":"u","props":[1]}`,
		`{"env":5,"user":"u"}`,
		`{"env":"e","user":"u","x":{"y":"}"}}`,
		`{}`,
		`[]`,
		"{\"env\":\"\xff\",\"user\":\"u\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var r rawEvent
		ok := scanEnvelope(data, &r)
		var want envelope
		werr := json.Unmarshal(data, &want)
		if ok != (werr == nil) {
			t.Fatalf("%q: scanned %v, encoding/json error %v", data, ok, werr)
		}
		if !ok {
			return
		}
		if string(r.env) != want.Env || string(r.src) != want.Source || string(r.user) != want.User || string(r.name) != want.Name || r.ts != want.Time || r.rcv != want.Received {
			t.Fatalf("%q: scanned %+v, want %+v", data, r, want)
		}
		var got, wantProps map[string]any
		if r.props != nil {
			if err := json.Unmarshal(r.props, &got); err != nil {
				t.Fatalf("%q: props %q: %v", data, r.props, err)
			}
		}
		wantProps = want.Props
		if !reflect.DeepEqual(got, wantProps) {
			t.Fatalf("%q: props %v, want %v", data, got, wantProps)
		}
	})
}

var benchEnvelope = []byte(`{"id":"bf-123456","env":"env_syrn5smsy2uqhwuiue3k","src":"api","user":"bf-654321","name":"Bench Backfill A","ts":1764460800123456,"fwd":false,"rcv":1764460800999999}`)

func BenchmarkDecodeEnvelope(b *testing.B) {
	b.Run("scan", func(b *testing.B) {
		var r rawEvent
		for b.Loop() {
			if !scanEnvelope(benchEnvelope, &r) {
				b.Fatal("unreadable")
			}
		}
	})
	b.Run("encoding/json-raw-props", func(b *testing.B) {
		for b.Loop() {
			var env struct {
				envelope
				Props json.RawMessage `json:"props"`
			}
			if err := json.Unmarshal(benchEnvelope, &env); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding/json-map-props", func(b *testing.B) {
		for b.Loop() {
			var env envelope
			if err := json.Unmarshal(benchEnvelope, &env); err != nil {
				b.Fatal(err)
			}
		}
	})
}
