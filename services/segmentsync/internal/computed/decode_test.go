package computed

import (
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
