package relay

import "testing"

func TestLayoutForSink(t *testing.T) {
	l := NewLayout("ns")
	cases := []struct {
		subject      string
		mine, replay bool
	}{
		{"ns.events.env_a.appcues", true, false},
		{"ns.events.env_a.api", true, false},
		{l.ReplaySubject("env_a", "conn_1"), true, true},
		{l.ReplaySubject("env_a", "conn_2"), false, true}, // another sink's replay
		{"ns.events.env_b.appcues", false, false},         // another environment
		{l.ReplaySubject("env_b", "conn_1"), false, false},
		{"other.events.env_a.api", false, false},
		{"ns.events.env_a.api.extra", false, false},
	}
	for _, c := range cases {
		mine, replay := l.ForSink(c.subject, "env_a", "conn_1")
		if mine != c.mine || (mine && replay != c.replay) {
			t.Errorf("%s: mine %v replay %v, want %v %v", c.subject, mine, replay, c.mine, c.replay)
		}
	}
	if got := l.EnvFilter("env_a"); got != "ns.events.env_a.>" {
		t.Errorf("filter %s", got)
	}
}
