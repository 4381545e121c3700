package schema

import (
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

// now is the receive time of every validated event.
var now = time.Date(2025, 3, 14, 12, 0, 0, 0, time.UTC)

func validate(t *testing.T, in Input) Normalized {
	t.Helper()
	out, err := Default().Validate(in, now)
	if err != nil {
		t.Fatalf("Validate(%+v): %v", in, err)
	}
	return out
}

func wantFieldError(t *testing.T, in Input, field string) *FieldError {
	t.Helper()
	out, err := Default().Validate(in, now)
	if err == nil {
		t.Fatalf("Validate(%+v) accepted: %+v", in, out)
	}
	if err.Field != field {
		t.Fatalf("Validate(%+v) refused %q (%v); want field %q", in, err.Field, err, field)
	}
	if err.Reason == "" {
		t.Fatalf("Validate(%+v): field %q refused without a reason", in, field)
	}
	return err
}

func TestSchemaEventCounts(t *testing.T) {
	t.Parallel()
	s := Default()
	for source, want := range map[string]int{Appcues: 16, CommandBar: 16, API: 0, "": 32} {
		if got := len(s.Events(source)); got != want {
			t.Errorf("Events(%q) lists %d events; want %d", source, got, want)
		}
	}
	seen := map[string]bool{}
	for _, e := range s.Events("") {
		key := e.Source + "/" + e.Name
		if seen[key] {
			t.Errorf("%s listed twice", key)
		}
		seen[key] = true
	}
	if got, want := s.Sources(), []string{Appcues, CommandBar, API}; !reflect.DeepEqual(got, want) {
		t.Errorf("Sources() = %v; want %v", got, want)
	}
}

// wireDisplay maps the required Appcues wire keys to their display names.
var wireDisplay = map[string]string{
	"flowId":   "Flow ID",
	"formId":   "Form ID",
	"fieldId":  "Field ID",
	"score":    "NPS Score",
	"feedback": "NPS Feedback",
}

// appcuesEventTable holds each Appcues event with the least properties it is
// accepted with (wire keys, all required).
var appcuesEventTable = []struct {
	display, wire string
	required      map[string]any
}{
	{"Flow Started", "flow_started", map[string]any{"flowId": "f1"}},
	{"Flow Completed", "flow_completed", map[string]any{"flowId": "f1"}},
	{"Flow Skipped", "flow_skipped", map[string]any{"flowId": "f1"}},
	{"Flow Aborted", "flow_aborted", map[string]any{"flowId": "f1"}},
	{"Step Started", "step_started", map[string]any{"flowId": "f1"}},
	{"Step Completed", "step_completed", map[string]any{"flowId": "f1"}},
	{"Step Skipped", "step_skipped", map[string]any{"flowId": "f1"}},
	{"Step Aborted", "step_aborted", map[string]any{"flowId": "f1"}},
	{"Step Interacted", "step_interacted", map[string]any{"flowId": "f1"}},
	{"Form Submitted", "form_submitted", map[string]any{"flowId": "f1", "formId": "form1"}},
	{"Form Field Submitted", "form_field_submitted", map[string]any{"flowId": "f1", "formId": "form1", "fieldId": "email"}},
	{"NPS Survey Started", "nps_survey_started", map[string]any{}},
	{"NPS Score Submitted", "nps_score", map[string]any{"score": 9.0}},
	{"NPS Feedback Submitted", "nps_feedback", map[string]any{"feedback": "Great"}},
	{"NPS Ask Me Later Selected", "nps_ask_me_later_selected", map[string]any{}},
	{"NPS Update Score Selected", "nps_clicked_update_nps_score", map[string]any{}},
}

func TestAppcuesEventsAcceptedUnderBothNames(t *testing.T) {
	t.Parallel()
	if len(appcuesEventTable) != 16 {
		t.Fatalf("table has %d Appcues events; want 16", len(appcuesEventTable))
	}
	for _, tc := range appcuesEventTable {
		want := map[string]any{}
		for k, v := range tc.required {
			want[wireDisplay[k]] = v
		}
		for _, name := range []string{tc.display, "appcues:" + tc.wire, "  appcues:" + tc.wire + " "} {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				props := map[string]any{}
				for k, v := range tc.required {
					props[k] = v
				}
				out := validate(t, Input{Source: Appcues, UserID: "u1", Name: name, Properties: props})
				if out.Name != tc.display || out.Source != Appcues {
					t.Errorf("normalised to %s/%q; want %s/%q", out.Source, out.Name, Appcues, tc.display)
				}
				if !reflect.DeepEqual(out.Properties, want) {
					t.Errorf("properties = %v; want %v", out.Properties, want)
				}
			})
		}
	}
}

// Appcues sends its properties "when provided": an event lacking any of them
// is accepted, and one carrying it with the wrong type is refused.
func TestAppcuesPropertiesOptionalButTyped(t *testing.T) {
	t.Parallel()
	wrongType := map[string]any{"flowId": true, "formId": []any{"f"}, "fieldId": map[string]any{}, "score": "nine", "feedback": 3.0}
	for _, tc := range appcuesEventTable {
		for key := range tc.required {
			t.Run(tc.display+" without "+key, func(t *testing.T) {
				t.Parallel()
				for _, absent := range []bool{true, false} {
					props := map[string]any{}
					for k, v := range tc.required {
						props[k] = v
					}
					if absent {
						delete(props, key)
					} else {
						props[key] = nil // JSON null is no value
					}
					out := validate(t, Input{Source: Appcues, UserID: "u1", Name: "appcues:" + tc.wire, Properties: props})
					if _, has := out.Properties[wireDisplay[key]]; has || out.Name != tc.display {
						t.Errorf("normalised to %q %v; want %q without %q", out.Name, out.Properties, tc.display, wireDisplay[key])
					}
				}
				props := map[string]any{key: wrongType[key]}
				wantFieldError(t, Input{Source: Appcues, UserID: "u1", Name: "appcues:" + tc.wire, Properties: props}, "properties."+wireDisplay[key])
			})
		}
	}
	wantFieldError(t, Input{Source: Appcues, UserID: "u1", Name: "NPS Score Submitted", Properties: map[string]any{"score": 11.0}}, "properties.NPS Score")
}

// Appcues events beyond the documented sixteen pass through under their own
// names, with the known properties renamed and checked like any other.
func TestAppcuesEventsOutsideSchemaPassThrough(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, want string
		in, props  map[string]any
	}{
		{"appcues:flow_error", "Flow Error", map[string]any{"flowId": "f1", "error": "boom"}, map[string]any{"Flow ID": "f1", "error": "boom"}},
		{"appcues:step_error", "Step Error", map[string]any{"stepId": "s1"}, map[string]any{"Step ID": "s1"}},
		{"appcues:step_child_activated", "Step Child Activated", map[string]any{"stepChildNumber": 2.0}, map[string]any{"Step Child Number": 2.0}},
		{"appcues:step_child_deactivated", "Step Child Deactivated", nil, map[string]any{}},
		{"Step Child Recovered", "Step Child Recovered", map[string]any{"Flow ID": "f1"}, map[string]any{"Flow ID": "f1"}},
		{"appcues:élan_shown", "Élan Shown", nil, map[string]any{}},
		// A known event in another letter case is that event, not a new one.
		{"flow started", "Flow Started", nil, map[string]any{}},
		{"APPCUES:FLOW_STARTED", "Flow Started", nil, map[string]any{}},
	}
	for _, tc := range tests {
		out := validate(t, Input{Source: Appcues, UserID: "u1", Name: tc.name, Properties: tc.in})
		if out.Name != tc.want || !reflect.DeepEqual(out.Properties, tc.props) {
			t.Errorf("%q normalised to %q %v; want %q %v", tc.name, out.Name, out.Properties, tc.want, tc.props)
		}
		if out.AppcuesUserID != "u1" {
			t.Errorf("%q: Appcues identity %q; want u1", tc.name, out.AppcuesUserID)
		}
	}
	wantFieldError(t, Input{Source: Appcues, UserID: "u1", Name: "appcues:flow_error", Properties: map[string]any{"flowId": true}}, "properties.Flow ID")
}

func TestAppcuesPropertiesRenamed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		event string
		in    map[string]any
		want  map[string]any
	}{
		{
			name:  "step interacted",
			event: "appcues:step_interacted",
			in: map[string]any{
				"flowId": "f1", "flowName": "Onboarding", "flowVersion": 3.0,
				"stepChildId": "c1", "stepChildNumber": 2.0, "stepType": "modal",
				"interactionType": "Button Clicked", "interaction": map[string]any{"text": "Next"},
				"category": "link", "destination": "https://example.com",
				"plan": "pro", // unknown properties pass through
			},
			want: map[string]any{
				"Flow ID": "f1", "Flow Name": "Onboarding", "Flow Version": 3.0,
				"Step Child ID": "c1", "Step Child Number": 2.0, "Step Type": "modal",
				"Interaction Type": "Button Clicked", "Interaction": map[string]any{"text": "Next"},
				"Category": "link", "Destination": "https://example.com",
				"plan": "pro",
			},
		},
		{
			name:  "form field submitted",
			event: "Form Field Submitted",
			in:    map[string]any{"flowId": "f1", "stepId": "s1", "formId": "form1", "fieldId": "email", "label": "Email", "value": "a@b.c"},
			want:  map[string]any{"Flow ID": "f1", "Step ID": "s1", "Form ID": "form1", "Field ID": "email", "Label": "Email", "Value": "a@b.c"},
		},
		{
			name:  "form submitted response list",
			event: "appcues:form_submitted",
			in:    map[string]any{"flowId": "f1", "formId": "form1", "response": []any{map[string]any{"fieldId": "q1", "value": "yes"}}},
			want:  map[string]any{"Flow ID": "f1", "Form ID": "form1", "Response": []any{map[string]any{"fieldId": "q1", "value": "yes"}}},
		},
		{
			name:  "nps score",
			event: "appcues:nps_score",
			in:    map[string]any{"score": 0.0, "pageUrl": "https://app.example.com", "pageTitle": "Home"},
			want:  map[string]any{"NPS Score": 0.0, "Page URL": "https://app.example.com", "Page Title": "Home"},
		},
		{
			name:  "display name wins over wire key",
			event: "appcues:flow_started",
			in:    map[string]any{"flowId": "wire", "Flow ID": "display"},
			want:  map[string]any{"Flow ID": "display"},
		},
		{
			name:  "display names accepted as sent",
			event: "Flow Completed",
			in:    map[string]any{"Flow ID": "f1", "Flow Name": "Tour"},
			want:  map[string]any{"Flow ID": "f1", "Flow Name": "Tour"},
		},
		{
			name:  "optional null dropped",
			event: "appcues:flow_started",
			in:    map[string]any{"flowId": "f1", "flowName": nil},
			want:  map[string]any{"Flow ID": "f1"},
		},
		{
			name:  "numeric ids become strings",
			event: "appcues:form_field_submitted",
			in:    map[string]any{"flowId": 1234567.0, "formId": 42.0, "fieldId": 7.0},
			want:  map[string]any{"Flow ID": "1234567", "Form ID": "42", "Field ID": "7"},
		},
		{
			name:  "timestamp unix ms",
			event: "appcues:flow_started",
			in:    map[string]any{"flowId": "f1", "timestamp": 1741953600123.0},
			want:  map[string]any{"Flow ID": "f1", "Timestamp": "2025-03-14T12:00:00.123Z"},
		},
		{
			name:  "timestamp unix seconds",
			event: "appcues:flow_started",
			in:    map[string]any{"flowId": "f1", "timestamp": 1741953600.0},
			want:  map[string]any{"Flow ID": "f1", "Timestamp": "2025-03-14T12:00:00Z"},
		},
		{
			name:  "timestamp offset to UTC",
			event: "appcues:nps_survey_started",
			in:    map[string]any{"timestamp": "2025-03-14T13:00:00+01:00"},
			want:  map[string]any{"Timestamp": "2025-03-14T12:00:00Z"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out := validate(t, Input{Source: Appcues, UserID: "u1", Name: tc.event, Properties: tc.in})
			if !reflect.DeepEqual(out.Properties, tc.want) {
				t.Errorf("properties = %v; want %v", out.Properties, tc.want)
			}
		})
	}
}

func TestAppcuesPropertyTypes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, event string
		props       map[string]any
		field       string
	}{
		{"nps score above 10", "appcues:nps_score", map[string]any{"score": 11.0}, "properties.NPS Score"},
		{"nps score below 0", "appcues:nps_score", map[string]any{"score": -1.0}, "properties.NPS Score"},
		{"nps score as string", "appcues:nps_score", map[string]any{"score": "9"}, "properties.NPS Score"},
		{"update score above 10", "appcues:nps_clicked_update_nps_score", map[string]any{"score": 10.5}, "properties.NPS Score"},
		{"flow id as bool", "appcues:flow_started", map[string]any{"flowId": true}, "properties.Flow ID"},
		{"flow name as number", "appcues:flow_started", map[string]any{"flowId": "f1", "flowName": 3.0}, "properties.Flow Name"},
		{"flow version as object", "appcues:flow_started", map[string]any{"flowId": "f1", "flowVersion": map[string]any{}}, "properties.Flow Version"},
		{"step child number as string", "appcues:step_interacted", map[string]any{"flowId": "f1", "stepChildNumber": "2"}, "properties.Step Child Number"},
		{"interaction as string", "appcues:step_interacted", map[string]any{"flowId": "f1", "interaction": "click"}, "properties.Interaction"},
		{"response as object", "appcues:form_submitted", map[string]any{"flowId": "f1", "formId": "x", "response": map[string]any{}}, "properties.Response"},
		{"value as list", "appcues:form_field_submitted", map[string]any{"flowId": "f1", "formId": "x", "fieldId": "y", "value": []any{}}, "properties.Value"},
		{"timestamp not a time", "appcues:flow_started", map[string]any{"flowId": "f1", "timestamp": "yesterday"}, "properties.Timestamp"},
		{"timestamp past year 9999", "appcues:flow_started", map[string]any{"flowId": "f1", "timestamp": 1e19}, "properties.Timestamp"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			wantFieldError(t, Input{Source: Appcues, UserID: "u1", Name: tc.event, Properties: tc.props}, tc.field)
		})
	}
	// The bounds themselves are scores.
	for _, score := range []float64{0, 10} {
		out := validate(t, Input{Source: Appcues, UserID: "u1", Name: "appcues:nps_score", Properties: map[string]any{"score": score}})
		if out.Properties["NPS Score"] != score {
			t.Errorf("NPS Score = %v; want %v", out.Properties["NPS Score"], score)
		}
	}
}

func TestAppcuesUserID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		props map[string]any
		want  string
	}{
		{"from properties", map[string]any{"appcuesUserID": "ac-7"}, "ac-7"},
		{"trimmed", map[string]any{"appcuesUserID": "  ac-7 "}, "ac-7"},
		{"blank falls back to user id", map[string]any{"appcuesUserID": "  "}, "u1"},
		{"non-string falls back to user id", map[string]any{"appcuesUserID": 7.0}, "u1"},
		{"absent falls back to user id", map[string]any{}, "u1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.props["flowId"] = "f1"
			_, sent := tc.props["appcuesUserID"]
			out := validate(t, Input{Source: Appcues, UserID: " u1 ", Name: "appcues:flow_started", Properties: tc.props})
			if out.AppcuesUserID != tc.want {
				t.Errorf("AppcuesUserID = %q; want %q", out.AppcuesUserID, tc.want)
			}
			if out.UserID != "u1" {
				t.Errorf("UserID = %q; want %q", out.UserID, "u1")
			}
			if _, ok := out.Properties["appcuesUserID"]; ok {
				t.Errorf("appcuesUserID left in properties: %v", out.Properties)
			}
			if _, kept := tc.props["appcuesUserID"]; kept != sent {
				t.Errorf("Validate changed the caller's properties: %v", tc.props)
			}
		})
	}
	// Other sources carry no Appcues identity.
	out := validate(t, Input{Source: CommandBar, UserID: "u1", Name: "opened", Properties: map[string]any{"appcuesUserID": "ac-7"}})
	if out.AppcuesUserID != "" {
		t.Errorf("CommandBar event got AppcuesUserID %q", out.AppcuesUserID)
	}
}

var commandBarNames = []string{
	"opened", "closed", "abandoned_search", "command_suggestion", "command_execution",
	"no_results_for_query", "preview_shown", "nudge_shown", "nudge_clicked", "nudge_snoozed",
	"nudge_completed", "nudge_dismissed", "survey_response", "questlist_shown",
	"questlist_engagement", "questlist_item_engagement",
}

func TestCommandBarEvents(t *testing.T) {
	t.Parallel()
	if len(commandBarNames) != 16 {
		t.Fatalf("table has %d CommandBar events; want 16", len(commandBarNames))
	}
	for _, name := range commandBarNames {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			props := map[string]any{"nudge_id": "n1", "step": 2.0, "trigger": "keyboard", "extra": []any{1.0}}
			out := validate(t, Input{Source: "CommandBar", UserID: "u2", Name: name, Properties: props})
			if out.Name != name || out.Source != CommandBar {
				t.Errorf("normalised to %s/%q; want %s/%q", out.Source, out.Name, CommandBar, name)
			}
			// CommandBar keys are already their display names.
			if !reflect.DeepEqual(out.Properties, props) {
				t.Errorf("properties = %v; want %v", out.Properties, props)
			}
		})
	}
	for _, name := range []string{"Opened", "commandbar:opened", "flow_started", "Flow Started", "nudge"} {
		t.Run("unknown "+name, func(t *testing.T) {
			t.Parallel()
			wantFieldError(t, Input{Source: CommandBar, UserID: "u2", Name: name}, "name")
		})
	}
	t.Run("nudge step as string", func(t *testing.T) {
		t.Parallel()
		wantFieldError(t, Input{Source: CommandBar, UserID: "u2", Name: "nudge_clicked", Properties: map[string]any{"step": "2"}}, "properties.step")
	})
}

func TestAPIAcceptsAnyName(t *testing.T) {
	t.Parallel()
	for _, source := range []string{API, "", " API "} {
		for _, name := range []string{"Signed Up", "appcues:flow_started", "opened"} {
			out := validate(t, Input{Source: source, UserID: "u3", Name: " " + name + " ", Properties: map[string]any{"flowId": "f1", "n": 1.0}})
			if out.Source != API || out.Name != name {
				t.Errorf("source %q name %q normalised to %s/%q", source, name, out.Source, out.Name)
			}
			if want := map[string]any{"flowId": "f1", "n": 1.0}; !reflect.DeepEqual(out.Properties, want) {
				t.Errorf("api properties = %v; want %v as sent", out.Properties, want)
			}
			if out.AppcuesUserID != "" {
				t.Errorf("api event got AppcuesUserID %q", out.AppcuesUserID)
			}
		}
	}
}

// nest wraps v in depth objects.
func nest(v any, depth int) any {
	for range depth {
		v = map[string]any{"k": v}
	}
	return v
}

func manyProperties(n int) map[string]any {
	m := make(map[string]any, n)
	for i := range n {
		m[fmt.Sprintf("p%d", i)] = float64(i)
	}
	return m
}

func TestValidateRefusesField(t *testing.T) {
	t.Parallel()
	base := Input{Source: API, UserID: "u1", Name: "Signed Up"}
	with := func(f func(*Input)) Input { in := base; f(&in); return in }
	tests := []struct {
		name  string
		in    Input
		field string
	}{
		{"unknown source", with(func(in *Input) { in.Source = "segment" }), "source"},
		{"event id too long", with(func(in *Input) { in.ID = strings.Repeat("e", MaxEventIDLen+1) }), "event_id"},
		{"user id missing", with(func(in *Input) { in.UserID = "" }), "user_id"},
		{"user id blank", with(func(in *Input) { in.UserID = " \t" }), "user_id"},
		{"user id too long", with(func(in *Input) { in.UserID = strings.Repeat("u", MaxUserIDLen+1) }), "user_id"},
		{"name missing", with(func(in *Input) { in.Name = "" }), "name"},
		{"name blank", with(func(in *Input) { in.Name = "  " }), "name"},
		{"name too long", with(func(in *Input) { in.Name = strings.Repeat("n", MaxNameLen+1) }), "name"},
		{"too far in the future", with(func(in *Input) { in.Time = now.Add(MaxFutureSkew + time.Second) }), "timestamp"},
		{"too many properties", with(func(in *Input) { in.Properties = manyProperties(MaxProperties + 1) }), "properties"},
		{"empty property name", with(func(in *Input) { in.Properties = map[string]any{"": 1.0} }), "properties"},
		{"property name too long", with(func(in *Input) { in.Properties = map[string]any{strings.Repeat("k", MaxPropertyKey+1): 1.0} }), "properties"},
		{"string too long", with(func(in *Input) { in.Properties = map[string]any{"s": strings.Repeat("x", MaxStringLen+1)} }), "properties.s"},
		{"NaN", with(func(in *Input) { in.Properties = map[string]any{"n": math.NaN()} }), "properties.n"},
		{"infinity in a list", with(func(in *Input) { in.Properties = map[string]any{"l": []any{1.0, math.Inf(-1)}} }), "properties.l"},
		{"nested too deep", with(func(in *Input) { in.Properties = map[string]any{"deep": nest("x", MaxPropertyDepth+1)} }), "properties.deep"},
		{"list nested too deep", with(func(in *Input) { in.Properties = map[string]any{"deep": []any{nest(1.0, MaxPropertyDepth)}} }), "properties.deep"},
		{"long string deep inside", with(func(in *Input) { in.Properties = map[string]any{"o": nest(strings.Repeat("x", MaxStringLen+1), 3)} }), "properties.o"},
		{"commandbar unknown event", with(func(in *Input) { in.Source = CommandBar; in.Name = "tour_started" }), "name"},
		// Ids and names refuse control characters, even where trimming would remove them.
		{"NUL in user id", with(func(in *Input) { in.UserID = "u\x00" }), "user_id"},
		{"trailing newline in user id", with(func(in *Input) { in.UserID = "u1\n" }), "user_id"},
		{"ESC in name", with(func(in *Input) { in.Name = "\x1b[31mSigned Up" }), "name"},
		{"CRLF in event id (an Idempotency-Key header)", with(func(in *Input) { in.ID = "e1\r\nX-Evil: 1" }), "event_id"},
		{"DEL in connection id", with(func(in *Input) { in.ConnectionID = "conn_1\x7f" }), "connection_id"},
		{"U+2028 in source", with(func(in *Input) { in.Source = "api\u2028" }), "source"},
		{"control character in a property name", with(func(in *Input) { in.Properties = map[string]any{"pl\nan": "gold"} }), "properties"},
		{"control character in a nested property name", with(func(in *Input) { in.Properties = map[string]any{"o": map[string]any{"\x00": 1.0}} }), "properties.o"},
		{"NUL in a property value", with(func(in *Input) { in.Properties = map[string]any{"s": "a\x00b"} }), "properties.s"},
		{"control character in appcuesUserID", with(func(in *Input) {
			in.Source, in.Name, in.Properties = Appcues, "appcues:flow_started", map[string]any{"flowId": "f", "appcuesUserID": "ac\x1b"}
		}), "properties.appcuesUserID"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			wantFieldError(t, tc.in, tc.field)
		})
	}
}

func TestValidateAcceptsLimits(t *testing.T) {
	t.Parallel()
	in := Input{
		Source:     API,
		ID:         strings.Repeat("e", MaxEventIDLen),
		UserID:     strings.Repeat("u", MaxUserIDLen),
		Name:       strings.Repeat("n", MaxNameLen),
		Time:       now.Add(MaxFutureSkew),
		Properties: manyProperties(MaxProperties),
	}
	in.Properties["p0"] = nest(strings.Repeat("x", MaxStringLen), MaxPropertyDepth)
	out := validate(t, in)
	if !out.Time.Equal(now.Add(MaxFutureSkew)) {
		t.Errorf("Time = %v; want the sender's %v", out.Time, now.Add(MaxFutureSkew))
	}
	past := now.Add(-365 * 24 * time.Hour)
	if out := validate(t, Input{UserID: "u1", Name: "x", Time: past}); !out.Time.Equal(past) {
		t.Errorf("Time = %v; want %v", out.Time, past)
	}
	if out := validate(t, Input{UserID: "u1", Name: "x"}); !out.Time.Equal(now) {
		t.Errorf("missing time became %v; want the receive time %v", out.Time, now)
	}
}

func TestParseTime(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   any
		want time.Time
		ok   bool
	}{
		{1741953600123.0, time.UnixMilli(1741953600123), true},
		{1741953600.0, time.Unix(1741953600, 0), true},
		{"2025-03-14T12:00:00.5Z", time.Date(2025, 3, 14, 12, 0, 0, 5e8, time.UTC), true},
		{253402300799999.0, time.Date(9999, 12, 31, 23, 59, 59, 999e6, time.UTC), true},
		{253402300800000.0, time.Time{}, false}, // year 10000
		{1e19, time.Time{}, false},              // past int64 milliseconds
		{0.0, time.Time{}, false},
		{-1.0, time.Time{}, false},
		{math.NaN(), time.Time{}, false},
		{math.Inf(1), time.Time{}, false},
		{"2025-03-14", time.Time{}, false},
		{"", time.Time{}, false},
		{true, time.Time{}, false},
		{int64(1741953600), time.Time{}, false}, // JSON numbers are float64
	}
	for _, tc := range tests {
		got, ok := ParseTime(tc.in)
		if ok != tc.ok || !got.Equal(tc.want) {
			t.Errorf("ParseTime(%v) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestParseWebhookAppcues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want Input
	}{
		{
			name: "webhook shape",
			body: `{"id":"evt-1","name":"appcues:flow_started","timestamp":1741953600000,"user_id":"u-1","account_id":"acct-1",
				"attributes":{"flowId":"f-1","flowName":"Onboarding"},"context":{"url":"https://app.example.com/home","title":"Home"}}`,
			want: Input{ID: "evt-1", Source: Appcues, UserID: "u-1", Name: "appcues:flow_started", Time: time.UnixMilli(1741953600000),
				Properties: map[string]any{"flowId": "f-1", "flowName": "Onboarding", "pageUrl": "https://app.example.com/home", "pageTitle": "Home"}},
		},
		{
			name: "context without attributes",
			body: `{"name":"appcues:nps_survey_started","user_id":"u-1","context":{"url":"https://app.example.com","title":"Home"}}`,
			want: Input{Source: Appcues, UserID: "u-1", Name: "appcues:nps_survey_started",
				Properties: map[string]any{"pageUrl": "https://app.example.com", "pageTitle": "Home"}},
		},
		{
			name: "attributes page wins over context",
			body: `{"name":"appcues:nps_score","userId":"u-1","attributes":{"score":7,"pageUrl":"https://a","pageTitle":"A"},"context":{"url":"https://b","title":"B"}}`,
			want: Input{Source: Appcues, UserID: "u-1", Name: "appcues:nps_score",
				Properties: map[string]any{"score": 7.0, "pageUrl": "https://a", "pageTitle": "A"}},
		},
		{
			name: "properties instead of attributes, null context",
			body: `{"name":"Flow Started","user_id":"u-1","timestamp":"2025-03-14T12:00:00Z","attributes":null,"properties":{"flowId":"f-1"},"context":null}`,
			want: Input{Source: Appcues, UserID: "u-1", Name: "Flow Started", Time: now,
				Properties: map[string]any{"flowId": "f-1"}},
		},
		{
			name: "numeric ids",
			body: `{"id":987654321,"name":"appcues:flow_started","user_id":1234567}`,
			want: Input{ID: "987654321", Source: Appcues, UserID: "1234567", Name: "appcues:flow_started", Properties: map[string]any{}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseWebhook(Appcues, []byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 {
				t.Fatalf("parsed %d events; want 1", len(got))
			}
			if !got[0].Time.Equal(tc.want.Time) {
				t.Errorf("Time = %v; want %v", got[0].Time, tc.want.Time)
			}
			got[0].Time, tc.want.Time = time.Time{}, time.Time{}
			if !reflect.DeepEqual(got[0], tc.want) {
				t.Errorf("parsed\n %+v\nwant\n %+v", got[0], tc.want)
			}
		})
	}
}

// An Appcues webhook event leaves validation with display names, the page
// from its context included.
func TestParseWebhookAppcuesValidates(t *testing.T) {
	t.Parallel()
	body := `{"id":"evt-2","name":"appcues:nps_score","timestamp":1741950000000,"user_id":"u-1",
		"attributes":{"score":9,"appcuesUserID":"ac-1"},"context":{"url":"https://app.example.com/nps","title":"Survey"}}`
	ins, err := ParseWebhook(Appcues, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	out := validate(t, ins[0])
	want := map[string]any{"NPS Score": 9.0, "Page URL": "https://app.example.com/nps", "Page Title": "Survey"}
	if out.Name != "NPS Score Submitted" || out.AppcuesUserID != "ac-1" || !reflect.DeepEqual(out.Properties, want) {
		t.Errorf("validated to %q, AppcuesUserID %q, properties %v; want %q, %q, %v", out.Name, out.AppcuesUserID, out.Properties, "NPS Score Submitted", "ac-1", want)
	}
	if !out.Time.Equal(time.UnixMilli(1741950000000)) {
		t.Errorf("Time = %v; want the webhook's timestamp", out.Time)
	}
}

func TestParseWebhookCommandBar(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want Input
	}{
		{
			name: "metadata and userId",
			body: `{"id":"cb-1","event":"nudge_clicked","userId":"u-2","timestamp":1741953600000,"metadata":{"nudge_id":"n1","step":2}}`,
			want: Input{ID: "cb-1", Source: CommandBar, UserID: "u-2", Name: "nudge_clicked", Time: time.UnixMilli(1741953600000),
				Properties: map[string]any{"nudge_id": "n1", "step": 2.0}},
		},
		{
			name: "properties and user_id",
			body: `{"event_id":"cb-2","type":"opened","user_id":"u-2","timestamp":"2025-03-14T12:00:00Z","properties":{"trigger":"keyboard"}}`,
			want: Input{ID: "cb-2", Source: CommandBar, UserID: "u-2", Name: "opened", Time: now, Properties: map[string]any{"trigger": "keyboard"}},
		},
		{
			name: "name key, no properties",
			body: `{"name":"closed","user_id":"u-2"}`,
			want: Input{Source: CommandBar, UserID: "u-2", Name: "closed", Properties: map[string]any{}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseWebhook(CommandBar, []byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 {
				t.Fatalf("parsed %d events; want 1", len(got))
			}
			if !got[0].Time.Equal(tc.want.Time) {
				t.Errorf("Time = %v; want %v", got[0].Time, tc.want.Time)
			}
			got[0].Time, tc.want.Time = time.Time{}, time.Time{}
			if !reflect.DeepEqual(got[0], tc.want) {
				t.Errorf("parsed\n %+v\nwant\n %+v", got[0], tc.want)
			}
			validate(t, got[0])
		})
	}
}

func TestParseWebhookBodyShapes(t *testing.T) {
	t.Parallel()
	ev := func(name string) string { return `{"event":"` + name + `","userId":"u"}` }
	tests := []struct {
		name, body string
		want       []string
	}{
		{"single object", ev("opened"), []string{"opened"}},
		{"array", "[" + ev("opened") + "," + ev("closed") + "]", []string{"opened", "closed"}},
		{"events wrapper", `{"events":[` + ev("nudge_shown") + "," + ev("nudge_clicked") + "," + ev("nudge_completed") + `]}`, []string{"nudge_shown", "nudge_clicked", "nudge_completed"}},
		{"surrounding whitespace", "\n\t " + ev("opened") + "\n", []string{"opened"}},
		{"events null is one event", `{"events":null,"event":"opened","userId":"u"}`, []string{"opened"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseWebhook(CommandBar, []byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, in := range got {
				names = append(names, in.Name)
				if in.Source != CommandBar || in.UserID != "u" {
					t.Errorf("event %+v lost its source or user", in)
				}
			}
			if !reflect.DeepEqual(names, tc.want) {
				t.Errorf("events %v; want %v", names, tc.want)
			}
		})
	}
}

func TestParseWebhookRefuses(t *testing.T) {
	t.Parallel()
	events := func(n int) string {
		return "[" + strings.TrimSuffix(strings.Repeat(`{"event":"opened","userId":"u"},`, n), ",") + "]"
	}
	tests := []struct {
		name, source, body string
		want               string // in the error
	}{
		{"empty body", CommandBar, "", "empty body"},
		{"blank body", Appcues, " \n\t", "empty body"},
		{"truncated object", Appcues, `{"name":`, "malformed JSON"},
		{"truncated array", CommandBar, `[{"event":"opened"}`, "malformed JSON array"},
		{"number", CommandBar, `42`, "JSON object or array"},
		{"string", Appcues, `"appcues:flow_started"`, "JSON object or array"},
		{"empty array", CommandBar, `[]`, "no events"},
		{"empty wrapper", Appcues, `{"events":[]}`, "no events"},
		{"wrapper events not a list", Appcues, `{"events":{}}`, "malformed JSON"},
		{"non-object element", CommandBar, `[{"event":"opened","userId":"u"},3]`, "events[1]: each event must be a JSON object"},
		{"null element", Appcues, `[null]`, "events[0]: each event must be a JSON object"},
		{"list element", Appcues, `{"events":[{"name":"x"},{"name":"y"},[]]}`, "events[2]"},
		{"appcues attributes not an object", Appcues, `{"name":"appcues:flow_started","attributes":"flowId=1"}`, "events[0]: attributes must be an object"},
		{"appcues properties not an object", Appcues, `[{"name":"x"},{"name":"x","properties":[1]}]`, "events[1]: properties must be an object"},
		{"appcues context not an object", Appcues, `{"name":"appcues:flow_started","context":"https://x"}`, "events[0]: context must be an object"},
		{"appcues without name", Appcues, `{"user_id":"u","attributes":{}}`, "events[0]: name is required"},
		{"appcues blank name", Appcues, `{"name":"  "}`, "events[0]: name is required"},
		{"commandbar metadata not an object", CommandBar, `{"event":"opened","metadata":true}`, "events[0]: metadata must be an object"},
		{"commandbar without event", CommandBar, `[{"event":"opened"},{"userId":"u"}]`, "events[1]: event is required"},
		{"timestamp not a time", CommandBar, `{"event":"opened","timestamp":"now"}`, "events[0]: timestamp"},
		{"timestamp negative", Appcues, `{"name":"x","timestamp":-5}`, "events[0]: timestamp"},
		{"timestamp overflows", Appcues, `{"name":"x","timestamp":1e19}`, "events[0]: timestamp"},
		{"too many events", CommandBar, events(MaxWebhookEvents + 1), fmt.Sprintf("%d events; at most %d", MaxWebhookEvents+1, MaxWebhookEvents)},
		{"source without webhooks", API, `{"name":"x"}`, "api sends no event webhooks"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseWebhook(tc.source, []byte(tc.body))
			if err == nil {
				t.Fatalf("accepted: %+v", got)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q; want it to mention %q", err, tc.want)
			}
			if got != nil {
				t.Errorf("returned events with an error: %+v", got)
			}
		})
	}
	t.Run("at the event limit", func(t *testing.T) {
		t.Parallel()
		got, err := ParseWebhook(CommandBar, []byte(events(MaxWebhookEvents)))
		if err != nil || len(got) != MaxWebhookEvents {
			t.Fatalf("parsed %d events, %v; want %d", len(got), err, MaxWebhookEvents)
		}
	})
}

// A webhook's ids and names go through the same validator as the API's: an
// Appcues or CommandBar event with a control character in an id is refused,
// naming the field.
func TestWebhookEventsRefuseControlCharacters(t *testing.T) {
	t.Parallel()
	sc := Default()
	for _, tc := range []struct {
		source, body, field string
	}{
		{Appcues, `{"id":"e1","name":"appcues:flow_started","user_id":"u\u0000","attributes":{"flowId":"f"}}`, "user_id"},
		{Appcues, `{"id":"e1\r\nX: 1","name":"appcues:flow_started","user_id":"u","attributes":{"flowId":"f"}}`, "event_id"},
		{Appcues, `{"id":"e1","name":"appcues:flow_started","user_id":"u","attributes":{"flowId":"f","appcuesUserID":"\u001b"}}`, "properties.appcuesUserID"},
		{CommandBar, `{"id":"e1","event":"opened\n","user_id":"u"}`, "name"},
		{CommandBar, `{"id":"e1","event":"opened","userId":"u\u007f"}`, "user_id"},
		{CommandBar, `{"id":"e1","event":"opened","user_id":"u","metadata":{"k\u0085":1}}`, "properties"},
	} {
		ins, err := ParseWebhook(tc.source, []byte(tc.body))
		if err != nil || len(ins) != 1 {
			t.Fatalf("%s: parse: %v", tc.body, err)
		}
		_, ferr := sc.Validate(ins[0], now)
		if ferr == nil || ferr.Field != tc.field || !strings.Contains(ferr.Reason, "control characters") {
			t.Errorf("%s: %+v; want a control-character refusal of %s", tc.body, ferr, tc.field)
		}
	}
}
