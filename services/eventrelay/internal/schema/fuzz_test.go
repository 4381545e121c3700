package schema

import (
	"testing"
	"time"

	"github.com/seghub/seghub/pkg/apperr"
)

// FuzzParseWebhook: any webhook body either is refused or yields at most
// MaxWebhookEvents events, and every event validation accepts names a schema
// event and a user, with a time the store's microseconds can hold, and ids
// and names free of control characters.
func FuzzParseWebhook(f *testing.F) {
	f.Add(true, []byte(`{"id":"e\u001b","event":"opened","userId":"u\u0000","metadata":{"k\n":1}}`))
	f.Add(false, []byte(`{"id":"evt-1","name":"appcues:flow_started","timestamp":1741953600000,"user_id":"u-1","account_id":"a-1","attributes":{"flowId":"f-1","flowName":"Onboarding","flowVersion":3},"context":{"url":"https://app.example.com","title":"Home"}}`))
	f.Add(false, []byte(`[{"name":"appcues:nps_score","user_id":"u-1","attributes":{"score":9,"appcuesUserID":"ac-1"}},{"name":"NPS Feedback Submitted","userId":7,"attributes":{"feedback":"ok"}}]`))
	f.Add(false, []byte(`{"events":[{"name":"appcues:form_field_submitted","user_id":"u","timestamp":"2025-03-14T12:00:00Z","attributes":{"flowId":1234567,"formId":"f","fieldId":"e","value":true}}]}`))
	f.Add(false, []byte(`{"name":"appcues:step_interacted","user_id":"u","context":{"url":1},"attributes":{"flowId":"f","interaction":{"a":[{"b":{}}]},"timestamp":1e19}}`))
	f.Add(true, []byte(`{"id":"cb-1","event":"nudge_clicked","userId":"u-2","timestamp":1741953600000,"metadata":{"nudge_id":"n1","step":2}}`))
	f.Add(true, []byte(`[{"event":"opened","user_id":"u","properties":{"trigger":"keyboard"}},{"type":"questlist_item_engagement","userId":"u","metadata":{"item_id":"i","action":"done"}}]`))
	f.Add(true, []byte(`{"events":[{"event":"Opened","userId":" "},3]}`))
	f.Add(true, []byte(`{"events":null}`))
	f.Add(false, []byte(`[`))
	f.Add(true, []byte(``))
	sc := Default()
	now := time.Date(2025, 3, 14, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, commandBar bool, body []byte) {
		source := Appcues
		if commandBar {
			source = CommandBar
		}
		inputs, err := ParseWebhook(source, body)
		if err != nil {
			if inputs != nil {
				t.Fatalf("returned %d events with error %v", len(inputs), err)
			}
			return
		}
		if len(inputs) == 0 || len(inputs) > MaxWebhookEvents {
			t.Fatalf("parsed %d events", len(inputs))
		}
		for i, in := range inputs {
			if in.Source != source {
				t.Fatalf("events[%d] has source %q; want %q", i, in.Source, source)
			}
			n, ferr := sc.Validate(in, now)
			if ferr != nil {
				if ferr.Field == "" {
					t.Fatalf("events[%d] refused without naming a field: %v", i, ferr)
				}
				continue
			}
			if n.UserID == "" || n.Name == "" {
				t.Fatalf("events[%d] accepted without user or name: %+v", i, n)
			}
			// Appcues events outside the schema pass through under their own names.
			ev, ok := sc.Lookup(source, n.Name)
			if (!ok && source != Appcues) || (ok && ev.Name != n.Name) {
				t.Fatalf("events[%d] accepted as %q, not a %s event's name", i, n.Name, source)
			}
			for _, id := range []string{n.ID, n.UserID, n.Name, n.AppcuesUserID} {
				if apperr.IdentifierProblem(id) != "" {
					t.Fatalf("events[%d] accepted with id or name %q", i, id)
				}
			}
			for k := range n.Properties {
				if apperr.IdentifierProblem(k) != "" {
					t.Fatalf("events[%d] accepted with property name %q", i, k)
				}
			}
			if source == Appcues && n.AppcuesUserID == "" {
				t.Fatalf("events[%d] accepted without an Appcues identity", i)
			}
			if n.Time.After(now.Add(MaxFutureSkew)) {
				t.Fatalf("events[%d] accepted at %v, beyond the future bound", i, n.Time)
			}
			// The relay stores times as unix microseconds.
			if time.UnixMicro(n.Time.UnixMicro()).Unix() != n.Time.Unix() {
				t.Fatalf("events[%d] accepted at %v, which unix microseconds cannot hold", i, n.Time)
			}
		}
	})
}
