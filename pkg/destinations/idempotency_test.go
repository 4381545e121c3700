package destinations

import (
	"strings"
	"testing"
)

func ids(v ...string) []Identity {
	out := make([]Identity, len(v))
	for i, id := range v {
		out[i] = Identity{UserID: "u-" + id, ID: id}
	}
	return out
}

// A batch's key follows its content: the same content (however it is
// rebuilt, and whatever its place in a task) keeps the key, any change of
// what a destination receives changes it.
func TestContentKeyNamesOneContent(t *testing.T) {
	t.Parallel()
	base := SegmentBatch{SegmentID: "seg_1", DisplayName: "Trial", Add: ids("a", "b"), Remove: ids("c")}
	key := ContentKey("run_1", base)
	if !strings.HasPrefix(key, "run_1-") || len(key) != len("run_1-")+32 {
		t.Fatalf("key = %q, want run_1-<32 hex>", key)
	}
	same := base
	same.Add, same.Remove = ids("a", "b"), ids("c") // rebuilt by a resumed attempt
	same.Page, same.TotalPages, same.TaskID = 3, 7, "run_1-other"
	if got := ContentKey("run_1", same); got != key {
		t.Fatalf("same content: key %q, want %q", got, key)
	}
	for name, b := range map[string]SegmentBatch{
		"other member":         {SegmentID: "seg_1", DisplayName: "Trial", Add: ids("a", "x"), Remove: ids("c")},
		"one member fewer":     {SegmentID: "seg_1", DisplayName: "Trial", Add: ids("a"), Remove: ids("c")},
		"add became removal":   {SegmentID: "seg_1", DisplayName: "Trial", Add: ids("a"), Remove: ids("b", "c")},
		"ids split otherwise":  {SegmentID: "seg_1", DisplayName: "Trial", Add: ids("ab", ""), Remove: ids("c")},
		"other order":          {SegmentID: "seg_1", DisplayName: "Trial", Add: ids("b", "a"), Remove: ids("c")},
		"other display name":   {SegmentID: "seg_1", DisplayName: "Trial 2", Add: ids("a", "b"), Remove: ids("c")},
		"other segment":        {SegmentID: "seg_2", DisplayName: "Trial", Add: ids("a", "b"), Remove: ids("c")},
		"name and id run over": {SegmentID: "seg_1T", DisplayName: "rial", Add: ids("a", "b"), Remove: ids("c")},
	} {
		if got := ContentKey("run_1", b); got == key {
			t.Errorf("%s: key unchanged (%q)", name, got)
		}
	}
	if got := ContentKey("run_2", base); got == key {
		t.Errorf("another run: key unchanged (%q); a later run re-adding the same members would be answered from memory", got)
	}
}
