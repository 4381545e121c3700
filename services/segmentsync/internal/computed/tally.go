package computed

import (
	"encoding/json"
	"slices"
	"strings"

	"github.com/seghub/seghub/services/segmentsync/internal/rules"
	"github.com/seghub/seghub/services/segmentsync/internal/store"
)

// tallyCond is a condition a read counts, for events after since.
type tallyCond struct {
	cond  *rules.Cond
	since uint64
}

// tally is a read's in-memory aggregation: users by index, and per
// condition a slot per user pointing at an entry whose day counts are a
// list in one shared slice (no map per user).
type tally struct {
	env     string
	conds   []tallyCond
	filters bool // a condition filters on properties
	users   map[string]int32
	ids     []string
	slot    [][]int32 // per condition: user index → entry index + 1
	ents    []tallyEntry
	days    []dayNode
	// read counts the events decoded; unreadable those skipped.
	read, unreadable int
}

type tallyEntry struct {
	first, last int64
	head        int32 // day list: index + 1 in days
}

type dayNode struct {
	day  int32
	n    int32
	next int32
}

func newTally(env string, conds []tallyCond) *tally {
	t := &tally{env: env, conds: conds, users: map[string]int32{}, slot: make([][]int32, len(conds))}
	for _, c := range conds {
		if len(c.cond.Where) > 0 {
			t.filters = true
		}
	}
	return t
}

// entries is how many user-condition aggregates the tally holds.
func (t *tally) entries() int { return len(t.ents) }

// add counts one event of the stream.
func (t *tally) add(seq uint64, data []byte) {
	var r rawEvent
	if !scanEnvelope(data, &r) || len(r.env) == 0 || len(r.user) == 0 {
		t.unreadable++
		return
	}
	t.read++
	if string(r.env) != t.env {
		return
	}
	var props map[string]any
	decoded := false
	for k := range t.conds {
		c := &t.conds[k]
		if seq <= c.since || string(r.src) != c.cond.Source || string(r.name) != c.cond.Name {
			continue
		}
		if len(c.cond.Where) > 0 && !decoded {
			decoded = true
			if r.props != nil && json.Unmarshal(r.props, &props) != nil {
				props = nil
			}
		}
		if len(c.cond.Where) > 0 && !c.cond.Matches(c.cond.Source, c.cond.Name, props) {
			continue
		}
		t.count(k, r.user, rules.EventTime(r.ts, r.rcv))
	}
}

func (t *tally) count(k int, user []byte, at int64) {
	u, ok := t.users[string(user)]
	if !ok {
		id := string(user)
		u = int32(len(t.ids))
		t.users[id] = u
		t.ids = append(t.ids, id)
	}
	s := t.slot[k]
	if int(u) >= len(s) {
		s = slices.Grow(s, len(t.ids)-len(s))[:len(t.ids)]
		t.slot[k] = s
	}
	if s[u] == 0 {
		t.ents = append(t.ents, tallyEntry{first: at, last: at})
		s[u] = int32(len(t.ents))
	}
	e := &t.ents[s[u]-1]
	e.first, e.last = min(e.first, at), max(e.last, at)
	day := rules.Day(at)
	for i := e.head; i != 0; i = t.days[i-1].next {
		if t.days[i-1].day == day {
			t.days[i-1].n++
			return
		}
	}
	t.days = append(t.days, dayNode{day: day, n: 1, next: e.head})
	e.head = int32(len(t.days))
}

// userAggs returns the tally as the store takes it (one backing array for
// all aggregates and one for all day counts).
func (t *tally) userAggs() []store.UserAggs {
	out := make([]store.UserAggs, 0, len(t.ids))
	aggs := make([]store.KeyedAgg, 0, len(t.ents))
	days := make([]rules.DayCount, 0, len(t.days))
	for u := range t.ids {
		a0 := len(aggs)
		for k, s := range t.slot {
			if u >= len(s) || s[u] == 0 {
				continue
			}
			e := &t.ents[s[u]-1]
			d0 := len(days)
			for i := e.head; i != 0; i = t.days[i-1].next {
				days = append(days, rules.DayCount{Day: t.days[i-1].day, N: int64(t.days[i-1].n)})
			}
			ds := days[d0:len(days):len(days)]
			slices.SortFunc(ds, func(a, b rules.DayCount) int { return int(a.Day - b.Day) })
			aggs = append(aggs, store.KeyedAgg{Key: t.conds[k].cond.Key, Agg: rules.Agg{Days: ds, First: e.first, Last: e.last}})
		}
		if len(aggs) > a0 {
			out = append(out, store.UserAggs{User: t.ids[u], Aggs: aggs[a0:len(aggs):len(aggs)]})
		}
	}
	return out
}

// byKey returns the tally as condition key → user id → aggregate (the
// preview's shape).
func (t *tally) byKey() map[string]map[string]*rules.Agg {
	out := map[string]map[string]*rules.Agg{}
	for _, c := range t.conds {
		out[c.cond.Key] = map[string]*rules.Agg{}
	}
	for _, u := range t.userAggs() {
		for i := range u.Aggs {
			out[u.Aggs[i].Key][u.User] = &u.Aggs[i].Agg
		}
	}
	return out
}

// addMsg counts a stream message of t's environment (the read's
// callback; the reader may pass other environments' messages too). An
// empty subject is one the reader could not tell (a direct read, used only
// where the environment has no replays): the envelope tells its
// environment.
func (t *tally) addMsg(prefix, subject string, seq uint64, data []byte) {
	if subject != "" {
		rest, ok := strings.CutPrefix(subject, prefix)
		if !ok || !strings.HasPrefix(rest, t.env) || !strings.HasPrefix(rest[len(t.env):], ".") || !counted(rest) {
			return
		}
	}
	t.add(seq, data)
}
