package grpcserver

import (
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	eventrelayv1 "github.com/seghub/seghub/gen/seghub/eventrelay/v1"
	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"
)

func TestCheckIdentifiers(t *testing.T) {
	t.Parallel()
	props := func(m map[string]any) *structpb.Struct {
		s, err := structpb.NewStruct(m)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	str := func(s string) *segmentsyncv1.PropertyValue {
		return &segmentsyncv1.PropertyValue{Kind: &segmentsyncv1.PropertyValue_StringValue{StringValue: s}}
	}
	events := func(bad *eventrelayv1.Event) *eventrelayv1.TrackBatchRequest {
		ok := &eventrelayv1.Event{EventId: "e-1", Source: "appcues", UserId: "u-1", Name: "Flow Started", Properties: props(map[string]any{"note": "two\nlines\ttabbed"})}
		return &eventrelayv1.TrackBatchRequest{Events: []*eventrelayv1.Event{ok, ok, ok, bad}}
	}
	for _, tc := range []struct {
		name  string
		req   proto.Message
		field string // "" means accepted
	}{
		{"valid batch, free text with newlines", events(&eventrelayv1.Event{UserId: "u-2", Name: "n"}), ""},
		{"NUL in user_id", events(&eventrelayv1.Event{UserId: "u\x00", Name: "n"}), "events[3].user_id"},
		{"ESC in event name", events(&eventrelayv1.Event{UserId: "u", Name: "\x1b[2J"}), "events[3].name"},
		{"newline in event id (an Idempotency-Key)", events(&eventrelayv1.Event{EventId: "e\nX-Injected: 1", UserId: "u", Name: "n"}), "events[3].event_id"},
		{"DEL in a property name", events(&eventrelayv1.Event{UserId: "u", Name: "n", Properties: props(map[string]any{"pl\x7fan": "x"})}), "events[3].properties.fields"},
		{"NUL in a property value", events(&eventrelayv1.Event{UserId: "u", Name: "n", Properties: props(map[string]any{"plan": "a\x00"})}), `events[3].properties.fields["plan"].string_value`},
		{"NUL in a nested property name", events(&eventrelayv1.Event{UserId: "u", Name: "n", Properties: props(map[string]any{"o": map[string]any{"\x00": 1}})}), `events[3].properties.fields["o"].struct_value.fields`},
		{"user property name", &segmentsyncv1.UpsertUsersRequest{Users: []*segmentsyncv1.User{{UserId: "u", Properties: map[string]*segmentsyncv1.PropertyValue{"plan\n": str("gold")}}}}, "users[0].properties"},
		{"user property value may hold a newline", &segmentsyncv1.UpsertUsersRequest{Users: []*segmentsyncv1.User{{UserId: "u", Properties: map[string]*segmentsyncv1.PropertyValue{"bio": str("a\nb")}}}}, ""},
		{"member ids", &segmentsyncv1.AddMembersRequest{SegmentId: "seg_1", UserIds: []string{"a", "b", "c\u2028"}}, "user_ids[2]"},
		{"segment description is free text", &segmentsyncv1.CreateSegmentRequest{Name: "Trial", Description: "line one\nline two"}, ""},
		{"segment name", &segmentsyncv1.CreateSegmentRequest{Name: "Trial\x00"}, "name"},
		{"nested condition segment id", &targetingv1.CreateExperienceRequest{Name: "Tour", Audience: &targetingv1.Audience{Match: &targetingv1.ConditionGroup{Groups: []*targetingv1.ConditionGroup{{Conditions: []*targetingv1.Condition{{SegmentId: "seg\x1b"}}}}}}}, "audience.match.groups[0].conditions[0].segment_id"},
	} {
		err := CheckIdentifiers(tc.req)
		if tc.field == "" {
			if err != nil {
				t.Errorf("%s: refused: %v", tc.name, err)
			}
			continue
		}
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument {
			t.Errorf("%s: code %v (%v); want InvalidArgument", tc.name, st.Code(), err)
			continue
		}
		var got []string
		for _, d := range st.Details() {
			if br, ok := d.(*errdetails.BadRequest); ok {
				for _, v := range br.GetFieldViolations() {
					got = append(got, v.GetField())
				}
			}
		}
		if len(got) != 1 || got[0] != tc.field || !strings.HasPrefix(st.Message(), tc.field+": ") {
			t.Errorf("%s: violations %q, message %q; want field %q", tc.name, got, st.Message(), tc.field)
		}
		if strings.ContainsAny(st.Message(), "\x00\x1b\n\x7f") {
			t.Errorf("%s: message echoes a control character: %q", tc.name, st.Message())
		}
	}
}

// BenchmarkCheckIdentifiers measures the check on a StreamTrack-sized batch
// (1000 Appcues events with five properties each).
func BenchmarkCheckIdentifiers(b *testing.B) {
	events := make([]*eventrelayv1.Event, 1000)
	for i := range events {
		p, _ := structpb.NewStruct(map[string]any{"flowId": "f-1", "flowName": "Onboarding", "stepId": "s-2", "pageUrl": "https://app.example.com/x", "npsScore": 9})
		events[i] = &eventrelayv1.Event{EventId: "evt-000001", Source: "appcues", UserId: "user-000001", Name: "appcues:step_completed", Properties: p}
	}
	req := &eventrelayv1.TrackBatchRequest{Events: events}
	b.ReportAllocs()
	for b.Loop() {
		if err := CheckIdentifiers(req); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(events)), "ns/event")
}
