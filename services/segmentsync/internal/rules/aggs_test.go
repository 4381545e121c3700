package rules

import (
	"math"
	"reflect"
	"sort"
	"testing"

	"pgregory.net/rapid"
)

func genDays(t *rapid.T) []DayCount {
	set := rapid.SliceOfDistinct(rapid.Int32Range(math.MinInt32, math.MaxInt32), func(d int32) int32 { return d }).Draw(t, "days")
	if rapid.Bool().Draw(t, "near") { // the usual case: recent days close together
		set = rapid.SliceOfDistinct(rapid.Int32Range(20000, 20400), func(d int32) int32 { return d }).Draw(t, "near days")
	}
	sort.Slice(set, func(i, j int) bool { return set[i] < set[j] })
	out := make([]DayCount, len(set))
	for i, d := range set {
		out[i] = DayCount{Day: d, N: rapid.Int64Range(1, math.MaxInt64).Draw(t, "n")}
	}
	return out
}

// Day buckets survive encoding unchanged, whatever their days and counts.
func TestDaysRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		days := genDays(t)
		got, err := DecodeDays(EncodeDays(days))
		if err != nil {
			t.Fatal(err)
		}
		if len(days) == 0 && len(got) == 0 {
			return
		}
		if !reflect.DeepEqual(got, days) {
			t.Fatalf("decoded %v, want %v", got, days)
		}
	})
}

func TestDecodeDaysRefusesGarbage(t *testing.T) {
	for _, b := range [][]byte{{0x80}, {0x02}, {0x02, 0x01, 0x00, 0x01}} {
		if _, err := DecodeDays(b); err == nil {
			t.Errorf("%x decoded", b)
		}
	}
}

// Adding aggregates equals counting their events together.
func TestAggAddEqualsCountingTogether(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		gen := rapid.SliceOf(rapid.Int64Range(-5*dayMicros, 400*dayMicros))
		xs, ys := gen.Draw(t, "xs"), gen.Draw(t, "ys")
		var a, b, all Agg
		for _, x := range xs {
			a.AddEvent(x)
			all.AddEvent(x)
		}
		for _, y := range ys {
			b.AddEvent(y)
			all.AddEvent(y)
		}
		a.Add(&b)
		if !reflect.DeepEqual(a.Days, all.Days) && !(len(a.Days) == 0 && len(all.Days) == 0) || a.First != all.First || a.Last != all.Last {
			t.Fatalf("sum %+v, together %+v", a, all)
		}
	})
}

func TestExpires(t *testing.T) {
	a := &Agg{Days: []DayCount{{Day: 10, N: 1}, {Day: 12, N: 2}}}
	for _, c := range []struct {
		windows []int32
		today   int32
		want    int32
	}{
		{nil, 10, math.MaxInt32},
		{[]int32{7}, 10, 17},
		{[]int32{7}, 17, 19},
		{[]int32{7}, 19, math.MaxInt32},
		{[]int32{7, 1}, 10, 11},
		{[]int32{7, 1}, 12, 13},
	} {
		if got := a.Expires(c.windows, c.today); got != c.want {
			t.Errorf("windows %v today %d: %d, want %d", c.windows, c.today, got, c.want)
		}
	}
}

func TestUsesProperties(t *testing.T) {
	for js, want := range map[string]bool{
		`{"event":{"source":"api","name":"X","count_operator":"COUNT_OPERATOR_AT_LEAST","times":1}}`:                                                                                          false,
		`{"all":[{"event":{"source":"api","name":"X","count_operator":"COUNT_OPERATOR_AT_LEAST","times":1}},{"not":{"property":{"property":"plan","operator":"PROPERTY_OPERATOR_EXISTS"}}}]}`: true,
	} {
		p, err := Compile(parse(t, js))
		if err != nil {
			t.Fatal(err)
		}
		if p.UsesProperties() != want {
			t.Errorf("%s: uses properties %v, want %v", js, !want, want)
		}
	}
}
