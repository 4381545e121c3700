package server

import (
	"strconv"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/seghub/seghub/pkg/apperr"
)

// split finds the ids strings.Split would (the last newline optional) and
// refuses exactly the requests holding an id the identifier rules refuse.
func TestPackedSplit(t *testing.T) {
	pieces := []string{"a", "Z", "0", ":", " ", "~", "é", "用", "\n", "\n", "\x00", "\t", "\r", "\x1f", "\x7f", "\u0085", "\u2028", "\xff", "\xc3"}
	rapid.Check(t, func(t *rapid.T) {
		var sb strings.Builder
		for _, p := range rapid.SliceOfN(rapid.SampledFrom(pieces), 0, 30).Draw(t, "pieces") {
			sb.WriteString(p)
		}
		in := sb.String()
		want := strings.Split(in, "\n")
		if strings.HasSuffix(in, "\n") || in == "" {
			want = want[:len(want)-1]
		}
		var bad = -1
		for i, id := range want {
			if apperr.IdentifierProblem(id) != "" {
				bad = i
				break
			}
		}
		var p packed
		err := p.split([]byte(in), 1000)
		if bad >= 0 {
			if err == nil || !strings.Contains(err.Error(), "packed_user_ids["+strconv.Itoa(bad)+"]") {
				t.Fatalf("%q: %v, want the refusal of id %d %q", in, err, bad, want[bad])
			}
			return
		}
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if len(p.ids) != len(want) {
			t.Fatalf("%q: %d ids, want %d", in, len(p.ids), len(want))
		}
		for i := range want {
			if string(p.ids[i]) != want[i] {
				t.Fatalf("%q: ids[%d] = %q, want %q", in, i, p.ids[i], want[i])
			}
		}
	})
	var p packed
	if err := p.split([]byte("a\nb\nc"), 2); err == nil || !strings.Contains(err.Error(), "more than 2") {
		t.Fatalf("3 ids with room for 2: %v", err)
	}
}

func BenchmarkPackedSplit(b *testing.B) {
	var in []byte
	for i := range 1000 {
		in = append(append(in, "user:"+strconv.Itoa(i*97)...), '\n')
	}
	var p packed
	for b.Loop() {
		if err := p.split(in, 10000); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1000), "ns/id")
}
