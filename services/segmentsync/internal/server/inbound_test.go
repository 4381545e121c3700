package server

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/seghub/seghub/pkg/apperr"
)

// A Heap page whose ids or segment name hold a control character is refused
// whole, naming the field, so nothing of it is applied.
func TestParseWebhookRefusesControlCharacters(t *testing.T) {
	t.Parallel()
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	page := func(segID, name, task, add, remove string) []byte {
		return []byte(fmt.Sprintf(`{"action_type":"segment.users.sync","data":{"segment":{"id":%s,"name":%s},"sync_info":{"page_number":1,"total_pages":1,"sync_task_id":%s},"add":[{"id":"ok-1"},{"id":%s}],"remove":[{"id":%s}]}}`,
			q(segID), q(name), q(task), q(add), q(remove)))
	}
	if _, err := parseWebhook(page("s1", "Trial", "t1", "u-2", "u-3")); err != nil {
		t.Fatalf("valid page refused: %v", err)
	}
	for _, tc := range []struct {
		body  []byte
		field string
	}{
		{page("s\x001", "Trial", "t1", "u-2", "u-3"), "data.segment.id"},
		{page("s1", "Tr\x1bial", "t1", "u-2", "u-3"), "data.segment.name"},
		{page("s1", "Trial\n", "t1", "u-2", "u-3"), "data.segment.name"},
		{page("s1", "Trial", "t\x7f1", "u-2", "u-3"), "data.sync_info.sync_task_id"},
		{page("s1", "Trial", "t1", "u\x00", "u-3"), "data.add[1].id"},
		{page("s1", "Trial", "t1", "u-2", "\nu-3"), "data.remove[0].id"},
	} {
		_, err := parseWebhook(tc.body)
		if apperr.Code(err) != codes.InvalidArgument || !strings.HasPrefix(err.Error(), tc.field+":") {
			t.Errorf("%s: %v; want InvalidArgument naming %s", tc.body, err, tc.field)
		}
	}
}
