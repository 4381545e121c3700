package server

import (
	"testing"
	"time"

	"github.com/seghub/seghub/pkg/apperr"
)

// FuzzParseWebhook: any body either parses into a page whose numbers and
// ids are valid, or is refused with an error; it never panics.
func FuzzParseWebhook(f *testing.F) {
	f.Add([]byte(`{"id_token":"t","action_type":"segment.users.sync","data":{"segment":{"id":"1","name":"S"},"sync_info":{"page_number":1,"total_pages":2,"sync_task_id":"t1"},"add":[{"id":"a"}],"remove":[{"id":7}]}}`))
	f.Add([]byte(`{"action_type":"segment.users.sync","data":{"segment":{"id":12,"name":" "},"sync_info":{"page_number":0,"total_pages":0}}}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := parseWebhook(body)
		if err != nil {
			return
		}
		if p.Page < 1 || p.Page > p.TotalPages || p.TotalPages > MaxTotalPages || p.TaskID == "" || p.ExternalSegmentID == "" || p.SegmentName == "" {
			t.Fatalf("accepted an invalid page: %+v", p)
		}
		for _, id := range []string{p.TaskID, p.ExternalSegmentID, p.SegmentName} {
			if apperr.IdentifierProblem(id) != "" {
				t.Fatalf("accepted id or name %q", id)
			}
		}
		for _, id := range append(append([]string{}, p.Adds...), p.Removes...) {
			if id == "" || len(id) > MaxUserIDLength || apperr.IdentifierProblem(id) != "" {
				t.Fatalf("accepted id %q", id)
			}
		}
	})
}

// FuzzVerifySignature: only the exact HMAC of the timestamp and body passes.
func FuzzVerifySignature(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	f.Add("ts:1800000000,hmac:00", []byte("body"))
	f.Add("hmac:zz,ts:x", []byte(""))
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		if VerifySignature("secret", header, body, now) {
			// A passing header must be the one we would compute.
			if header != sign("secret", now, body) && !sameSignature(header, sign("secret", now, body)) {
				t.Fatalf("accepted a forged signature %q", header)
			}
		}
	})
}
