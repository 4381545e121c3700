package relay

import "testing"

func TestLayoutForSink(t *testing.T) {
	l := NewLayout("ns")
	cases := []struct {
		subject      string
		mine, replay bool
	}{
		{"ns.events.env_a.3.appcues", true, false},
		{"ns.events.env_a.0.api", true, false},
		{l.ReplaySubject("env_a", "u1", "conn_1"), true, true},
		{l.ReplaySubject("env_a", "u1", "conn_2"), false, true}, // another sink's replay
		{"ns.events.env_b.3.appcues", false, false},             // another environment
		{l.ReplaySubject("env_b", "u1", "conn_1"), false, false},
		{"other.events.env_a.1.api", false, false},
		{"ns.events.env_a.1.api.extra", false, false},
		{"ns.events.env_a.api", false, false}, // no partition
	}
	for _, c := range cases {
		mine, replay := l.ForSink(c.subject, "env_a", "conn_1")
		if mine != c.mine || (mine && replay != c.replay) {
			t.Errorf("%s: mine %v replay %v, want %v %v", c.subject, mine, replay, c.mine, c.replay)
		}
	}
	if got := l.PartitionFilter("env_a", 5); got != "ns.events.env_a.5.>" {
		t.Errorf("filter %s", got)
	}
}

// A user's events and replays share one partition, so one consumer sees
// them in order; users spread over every partition.
func TestLayoutPartitions(t *testing.T) {
	l := NewLayout("ns").WithPartitions(8)
	seen := map[int]int{}
	for i := range 4000 {
		u := "user-" + string(rune('a'+i%26)) + string(rune('0'+i%10)) + string(rune(i))
		p := l.Partition(u)
		if p < 0 || p >= 8 {
			t.Fatalf("partition %d of %q out of range", p, u)
		}
		seen[p]++
		e := &Envelope{Env: "env_a", Source: "api", User: u}
		want := l.PartitionFilter("env_a", p)
		want = want[:len(want)-1] // "...<p>."
		if s := l.Subject(e); s != want+"api" {
			t.Fatalf("subject %s, want %sapi", s, want)
		}
		if s := l.ReplaySubject("env_a", u, "conn_1"); s != want+"_replay.conn_1" {
			t.Fatalf("replay subject %s, want %s_replay.conn_1", s, want)
		}
	}
	for p := range 8 {
		if seen[p] < 4000/8/2 {
			t.Errorf("partition %d holds %d of 4000 users: uneven %v", p, seen[p], seen)
		}
	}
	if n := NewLayout("ns").WithPartitions(0).Partitions; n != DefaultPartitions {
		t.Errorf("WithPartitions(0) gave %d partitions", n)
	}
}

func TestSinkConsumerName(t *testing.T) {
	name := SinkConsumerName("conn_a_p1", 12)
	conn, p, ok := parseSinkConsumer(name)
	if !ok || conn != "conn_a_p1" || p != 12 {
		t.Errorf("parse %s: %q %d %v", name, conn, p, ok)
	}
	for _, n := range []string{"identity_attach", "sink_conn", "sink_conn_pX"} {
		if _, _, ok := parseSinkConsumer(n); ok {
			t.Errorf("%s parsed as a sink consumer", n)
		}
	}
}

// The consumer of the layout before partitions takes the subjects that
// release wrote (its filter also takes partitioned ones, which are not its).
func TestLayoutForLegacySink(t *testing.T) {
	l := NewLayout("ns")
	cases := []struct {
		subject      string
		mine, replay bool
	}{
		{"ns.events.env_a.api", true, false},
		{"ns.events.env_a._replay.conn_1", true, true},
		{"ns.events.env_a._replay.conn_2", false, true}, // another sink's replay
		{"ns.events.env_b.api", false, false},           // another environment
		{"ns.events.env_a.3.api", false, false},         // partitioned
		{l.ReplaySubject("env_a", "u1", "conn_1"), false, false},
		{"other.events.env_a.api", false, false},
	}
	for _, c := range cases {
		mine, replay := l.ForLegacySink(c.subject, "env_a", "conn_1")
		if mine != c.mine || (mine && replay != c.replay) {
			t.Errorf("%s: mine %v replay %v, want %v %v", c.subject, mine, replay, c.mine, c.replay)
		}
	}
	if n := LegacySinkConsumerName("conn_1"); n != "sink_conn_1" {
		t.Errorf("legacy consumer name %s", n)
	}
	for _, n := range []string{LegacySinkConsumerName("conn_1"), upgradeConsumerName("conn_1")} {
		if _, _, ok := parseSinkConsumer(n); ok {
			t.Errorf("%s parsed as a partition's consumer", n)
		}
	}
}
