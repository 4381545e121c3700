package index

import (
	"strconv"
	"strings"
	"testing"

	"pgregory.net/rapid"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
)

// dictModel is the dictionary as two plain maps kept a bijection.
type dictModel struct {
	dense map[string]uint32
	name  map[uint32]string
}

func (m *dictModel) set(id string, d uint32) {
	if old, ok := m.name[d]; ok {
		delete(m.dense, old)
	}
	if old, ok := m.dense[id]; ok {
		delete(m.name, old)
	}
	m.dense[id], m.name[d] = d, id
}

func (m *dictModel) remove(d uint32) {
	if id, ok := m.name[d]; ok {
		delete(m.dense, id)
		delete(m.name, d)
	}
}

// The dictionary answers as the two maps it replaces over random inserts,
// id changes, deletes (with compaction), lookups both ways and growth.
func TestDictMatchesMaps(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		dt := newDict()
		m := &dictModel{dense: map[string]uint32{}, name: map[uint32]string{}}
		// Ids from a small pool collide often; some exceed 127 bytes (two-byte
		// length) and one is empty.
		pool := []string{"", "a", "b", "user:1", "user:2", "ü", strings.Repeat("x", 130), strings.Repeat("y", 300)}
		idGen := rapid.OneOf(rapid.SampledFrom(pool), rapid.StringN(0, 20, -1))
		denseGen := rapid.OneOf(rapid.Uint32Range(0, 40), rapid.Uint32Range(0, 5000))
		check := func(rt *rapid.T) {
			if dt.len() != len(m.name) {
				rt.Fatalf("len %d, model %d", dt.len(), len(m.name))
			}
			for id, d := range m.dense {
				if got, ok := dt.dense(id); !ok || got != d {
					rt.Fatalf("dense(%q) = %d %v, want %d", id, got, ok, d)
				}
			}
			for d, id := range m.name {
				if got, ok := dt.name(d); !ok || got != id {
					rt.Fatalf("name(%d) = %q %v, want %q", d, got, ok, id)
				}
			}
			if dt.used*4 > len(dt.table)*3 || dt.dead*2 > len(dt.arena) {
				rt.Fatalf("table %d/%d used, arena %d/%d dead", dt.used, len(dt.table), dt.dead, len(dt.arena))
			}
		}
		rt.Repeat(map[string]func(*rapid.T){
			"set": func(rt *rapid.T) {
				id, d := idGen.Draw(rt, "id"), denseGen.Draw(rt, "dense")
				if err := dt.set(id, d); err != nil {
					rt.Fatal(err)
				}
				m.set(id, d)
			},
			"grow": func(rt *rapid.T) {
				base, n := rapid.Uint32Range(0, 10000).Draw(rt, "base"), rapid.IntRange(1, 300).Draw(rt, "n")
				for i := range uint32(n) {
					id := "u" + strconv.Itoa(int(base+i*7))
					if err := dt.set(id, base+i); err != nil {
						rt.Fatal(err)
					}
					m.set(id, base+i)
				}
			},
			"remove": func(rt *rapid.T) {
				d := denseGen.Draw(rt, "dense")
				dt.remove(d)
				m.remove(d)
			},
			"removeAll": func(rt *rapid.T) {
				for d := range m.name {
					dt.remove(d)
					m.remove(d)
				}
			},
			"dense": func(rt *rapid.T) {
				id := idGen.Draw(rt, "id")
				want, wantOK := m.dense[id]
				if got, ok := dt.dense(id); got != want || ok != wantOK {
					rt.Fatalf("dense(%q) = %d %v, want %d %v", id, got, ok, want, wantOK)
				}
			},
			"denseMany": func(rt *rapid.T) {
				// More ids than one look-ahead group, held and not, with repeats.
				ids := rapid.SliceOfN(idGen, 0, 3*lookahead+5).Draw(rt, "ids")
				for id := range m.dense {
					if len(ids) > 4*lookahead {
						break
					}
					ids = append(ids, id)
				}
				got := map[int]uint32{}
				bs := make([][]byte, len(ids))
				for i, id := range ids {
					bs[i] = []byte(id)
				}
				last := -1
				dt.denseMany(bs, func(i int, d uint32) {
					if i <= last {
						rt.Fatalf("denseMany found %d after %d: out of order", i, last)
					}
					last, got[i] = i, d
				})
				for i, id := range ids {
					want, wantOK := m.dense[id]
					if d, ok := got[i]; ok != wantOK || d != want {
						rt.Fatalf("denseMany: ids[%d] %q = %d %v, want %d %v", i, id, d, ok, want, wantOK)
					}
				}
			},
			"name": func(rt *rapid.T) {
				d := denseGen.Draw(rt, "dense")
				want, wantOK := m.name[d]
				if got, ok := dt.name(d); got != want || ok != wantOK {
					rt.Fatalf("name(%d) = %q %v, want %q %v", d, got, ok, want, wantOK)
				}
			},
			"": check,
		})
	})
}

// A feed that renames a dense id, or moves an id to another dense id, leaves
// one pair per user in both directions.
func TestApplyKeepsDictionaryOneToOne(t *testing.T) {
	ix := New()
	apply := func(m *segmentsyncv1.WatchMembershipResponse) {
		t.Helper()
		if err := ix.Apply(m); err != nil {
			t.Fatal(err)
		}
	}
	apply(users(1, "a", "b")) // a=1 b=2
	apply(segment(2, "s", 1, 2))
	apply(&segmentsyncv1.WatchMembershipResponse{EnvironmentId: "env", Sequence: 3, Event: &segmentsyncv1.WatchMembershipResponse_Users{Users: &segmentsyncv1.UserBatch{
		Users: []*segmentsyncv1.User{{UserId: "c", DenseId: 1}}}}})
	if got := strings.Join(membersOf(ix, "s"), "+"); got != "b+c" {
		t.Fatalf("members after renaming dense 1: %s, want b+c", got)
	}
	ix.Read("env", func(v View) {
		if _, ok := v.Dense("a"); ok {
			t.Fatal("old id of dense 1 still resolves")
		}
	})
	apply(&segmentsyncv1.WatchMembershipResponse{EnvironmentId: "env", Sequence: 4, Event: &segmentsyncv1.WatchMembershipResponse_UsersDeleted{UsersDeleted: &segmentsyncv1.UsersDeleted{DenseIds: []uint32{2}}}})
	ix.Read("env", func(v View) {
		if _, ok := v.Dense("b"); ok {
			t.Fatal("deleted user still resolves")
		}
		if d, ok := v.Dense("c"); !ok || d != 1 {
			t.Fatalf("Dense(c) = %d %v, want 1", d, ok)
		}
	})
}

func membersOf(ix *Index, seg string) []string {
	var out []string
	ix.Read("env", func(v View) { out = v.Members(seg) })
	return out
}

// Lookups by id allocate nothing; by dense id, only the returned string.
func TestDictLookupsDoNotAllocate(t *testing.T) {
	ix := New()
	names := make([]string, 10000)
	for i := range names {
		names[i] = "user:" + strconv.Itoa(i+1)
	}
	if err := ix.Apply(users(1, names...)); err != nil {
		t.Fatal(err)
	}
	if err := ix.Apply(segment(2, "s", 1, 3, 5)); err != nil {
		t.Fatal(err)
	}
	e := ix.Env("env")
	v := View{e: e}
	i := 0
	if n := testing.AllocsPerRun(1000, func() {
		i++
		if _, ok := v.Dense(names[i%len(names)]); !ok {
			t.Fatal("missing user")
		}
		v.Dense("nobody")
		v.IsMember(names[i%len(names)], "s")
	}); n != 0 {
		t.Fatalf("id → dense allocates %.1f times a lookup", n)
	}
	if n := testing.AllocsPerRun(1000, func() {
		i++
		if _, ok := e.users.name(uint32(i%len(names)) + 1); !ok {
			t.Fatal("missing dense id")
		}
	}); n > 1 {
		t.Fatalf("dense → id allocates %.1f times a lookup, want at most the string", n)
	}
}
