package rules

import (
	"encoding/binary"
	"errors"
	"math"
)

// EncodeDays packs ascending day buckets compactly: the first day as a
// signed varint, then per bucket the day's delta from the previous one
// (uvarint, ≥ 1 after the first) and its count (uvarint). A user's row of a
// condition is mostly a few bytes this way instead of a row per day.
func EncodeDays(days []DayCount) []byte {
	b := make([]byte, 0, 2+3*len(days))
	prev := int32(0)
	for i, d := range days {
		if i == 0 {
			b = binary.AppendVarint(b, int64(d.Day))
		} else {
			b = binary.AppendUvarint(b, uint64(int64(d.Day)-int64(prev)))
		}
		b = binary.AppendUvarint(b, uint64(d.N))
		prev = d.Day
	}
	return b
}

var errDays = errors.New("rules: malformed day buckets")

// DecodeDays reads what EncodeDays wrote.
func DecodeDays(b []byte) ([]DayCount, error) {
	return AppendDecodeDays(nil, b)
}

// AppendDecodeDays is DecodeDays appending to out (a reader of many rows
// decodes into one buffer instead of a slice per row).
func AppendDecodeDays(out []DayCount, b []byte) ([]DayCount, error) {
	var day int64
	for i := 0; len(b) > 0; i++ {
		if i == 0 {
			v, n := binary.Varint(b)
			if n <= 0 {
				return nil, errDays
			}
			day, b = v, b[n:]
		} else {
			v, n := binary.Uvarint(b)
			if n <= 0 || v == 0 || v > math.MaxUint32 {
				return nil, errDays
			}
			day, b = day+int64(v), b[n:]
		}
		c, n := binary.Uvarint(b)
		if n <= 0 || c > math.MaxInt64 || day < math.MinInt32 || day > math.MaxInt32 {
			return nil, errDays
		}
		b = b[n:]
		out = append(out, DayCount{Day: int32(day), N: int64(c)})
	}
	return out, nil
}

// Add merges o into a: day counts summed, the earliest first, the latest
// last. It tells whether a changed.
func (a *Agg) Add(o *Agg) bool {
	if o == nil || len(o.Days) == 0 {
		return false
	}
	if len(a.Days) == 0 { // an aggregate has a bucket per event day: empty is none
		a.Days = append([]DayCount(nil), o.Days...)
		a.First, a.Last = o.First, o.Last
		return true
	}
	a.First, a.Last = min(a.First, o.First), max(a.Last, o.Last)
	merged := make([]DayCount, 0, len(a.Days)+len(o.Days))
	i, j := 0, 0
	for i < len(a.Days) || j < len(o.Days) {
		switch {
		case j == len(o.Days) || i < len(a.Days) && a.Days[i].Day < o.Days[j].Day:
			merged = append(merged, a.Days[i])
			i++
		case i == len(a.Days) || o.Days[j].Day < a.Days[i].Day:
			merged = append(merged, o.Days[j])
			j++
		default:
			merged = append(merged, DayCount{Day: a.Days[i].Day, N: a.Days[i].N + o.Days[j].N})
			i++
			j++
		}
	}
	a.Days = merged
	return true
}

// AddEvent counts one event at t (unix microseconds) into a.
func (a *Agg) AddEvent(t int64) {
	d := Day(t)
	if len(a.Days) == 0 {
		a.Days, a.First, a.Last = []DayCount{{Day: d, N: 1}}, t, t
		return
	}
	a.First, a.Last = min(a.First, t), max(a.Last, t)
	i := len(a.Days)
	for i > 0 && a.Days[i-1].Day > d {
		i--
	}
	if i > 0 && a.Days[i-1].Day == d {
		a.Days[i-1].N++
		return
	}
	a.Days = append(a.Days, DayCount{})
	copy(a.Days[i+1:], a.Days[i:])
	a.Days[i] = DayCount{Day: d, N: 1}
}

// Expires is the first day after today on which one of a's buckets leaves
// one of the windows (days long) or math.MaxInt32 when none will: a bucket
// of day b is inside a window of D days through day b+D-1.
func (a *Agg) Expires(windows []int32, today int32) int32 {
	out := int32(math.MaxInt32)
	for _, w := range windows {
		for _, d := range a.Days {
			if e := int64(d.Day) + int64(w); e > int64(today) {
				out = int32(min(int64(out), e))
				break // ascending: the first bucket leaving after today is this window's earliest
			}
		}
	}
	return out
}
