package rules

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
)

func parse(t *testing.T, js string) *segmentsyncv1.SegmentRule {
	t.Helper()
	var r segmentsyncv1.SegmentRule
	if err := protojson.Unmarshal([]byte(js), &r); err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return &r
}

// Every refusal is InvalidArgument naming the field, path and all.
func TestCompileRefusesNamingTheField(t *testing.T) {
	deep := `{"event":{"source":"appcues","name":"Flow Completed","count_operator":"COUNT_OPERATOR_AT_LEAST","times":1}}`
	for i := 0; i < MaxDepth; i++ {
		deep = `{"not":` + deep + `}`
	}
	many := make([]string, MaxConditions+1)
	for i := range many {
		many[i] = `{"property":{"property":"plan","operator":"PROPERTY_OPERATOR_EXISTS"}}`
	}
	for _, tc := range []struct{ rule, field, says string }{
		{`{}`, "rule", "exactly one"},
		{`{"all":[{"property":{"property":"plan","operator":"PROPERTY_OPERATOR_EXISTS"}},{"event":{"source":"appcues","name":"Flow Completed","count_operator":"COUNT_OPERATOR_AT_LEAST","times":1,"within_days":400}}]}`, "rule.all[1].event.within_days", "1..365"},
		{`{"any":[{"event":{"source":"appcues","name":"X"}}]}`, "rule.any[0].event.count_operator", "set count_operator"},
		{`{"event":{"source":"","name":"X","count_operator":"COUNT_OPERATOR_AT_LEAST","times":1}}`, "rule.event.source", "required"},
		{`{"event":{"source":"api","name":"X","count_operator":"COUNT_OPERATOR_AT_LEAST","times":0}}`, "rule.event.times", "at least 0"},
		{`{"event":{"source":"api","name":"X","count_operator":"COUNT_OPERATOR_AT_MOST","times":2000000}}`, "rule.event.times", "0..1000000"},
		{`{"event":{"source":"api","name":"X","count_operator":"COUNT_OPERATOR_EXACTLY","times":1,"start_date":"2026-02-30","end_date":"2026-03-01"}}`, "rule.event.start_date", "YYYY-MM-DD"},
		{`{"event":{"source":"api","name":"X","count_operator":"COUNT_OPERATOR_EXACTLY","times":1,"start_date":"2026-03-02","end_date":"2026-03-01"}}`, "rule.event.end_date", "before start_date"},
		{`{"event":{"source":"api","name":"X","count_operator":"COUNT_OPERATOR_EXACTLY","times":1,"within_days":3,"start_date":"2026-03-01","end_date":"2026-03-02"}}`, "rule.event.within_days", "not both"},
		{`{"event":{"source":"api","name":"X","seen":"SEEN_OPERATOR_LAST_AFTER"}}`, "rule.event.seen_time", "required"},
		{`{"event":{"source":"api","name":"X","seen":"SEEN_OPERATOR_LAST_AFTER","seen_time":"2026-03-01T00:00:00Z","within_days":2}}`, "rule.event", "takes no"},
		{`{"event":{"source":"api","name":"X","count_operator":"COUNT_OPERATOR_AT_LEAST","times":1,"where":[{"property":"Flow ID"}]}}`, "rule.event.where[0]", "string_value"},
		{`{"not":{"property":{"property":"plan","operator":"PROPERTY_OPERATOR_CONTAINS","value":{"number_value":3}}}}`, "rule.not.property.value", "string_value"},
		{`{"property":{"property":"plan","operator":"PROPERTY_OPERATOR_EXISTS","value":{"string_value":"x"}}}`, "rule.property.value", "no value"},
		{`{"property":{"property":"plan","operator":"PROPERTY_OPERATOR_EQUALS"}}`, "rule.property.value", "required"},
		{`{"property":{"property":"plan"}}`, "rule.property.operator", "required"},
		{deep, "rule" + strings.Repeat(".not", MaxDepth), "deep"},
		{`{"any":[` + strings.Join(many, ",") + `]}`, "rule.any", "at most 50"},
	} {
		_, err := Compile(parse(t, tc.rule))
		st, _ := status.FromError(err)
		if st.Code() != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", tc.rule, err)
			continue
		}
		var field string
		for _, d := range st.Details() {
			if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) > 0 {
				field = br.GetFieldViolations()[0].GetField()
			}
		}
		if field != tc.field || !strings.Contains(st.Message(), tc.says) {
			t.Errorf("%s: field %q message %q, want field %q saying %q", tc.rule, field, st.Message(), tc.field, tc.says)
		}
	}
}

func facts(props map[string]Value, aggs map[string]*Agg) Facts {
	return Facts{
		Prop: func(n string) (Value, bool) { v, ok := props[n]; return v, ok },
		Agg:  func(k string) *Agg { return aggs[k] },
	}
}

// A window counts today and the days before it; between counts its days;
// seen compares first and last times.
func TestEvaluate(t *testing.T) {
	today := Today(time.Date(2026, 3, 10, 15, 0, 0, 0, time.UTC))
	p, err := Compile(parse(t, `{"all":[
		{"event":{"source":"appcues","name":"Flow Completed","where":[{"property":"Flow ID","string_value":"f1"}],"count_operator":"COUNT_OPERATOR_AT_LEAST","times":2,"within_days":7}},
		{"not":{"property":{"property":"plan","operator":"PROPERTY_OPERATOR_EQUALS","value":{"string_value":"free"}}}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	key := p.Conds()[0].Key
	if !p.Conds()[0].Matches("appcues", "Flow Completed", map[string]any{"Flow ID": "f1", "Flow Name": "x"}) || p.Conds()[0].Matches("appcues", "Flow Completed", map[string]any{"Flow ID": "f2"}) {
		t.Fatal("filter does not select by Flow ID")
	}
	if w := p.Windows(); len(w) != 1 || w[0].Days != 7 || w[0].Key != key {
		t.Fatalf("windows %v", w)
	}
	agg := &Agg{Days: []DayCount{{today - 7, 5}, {today - 6, 1}, {today, 1}}}
	if !p.Eval(facts(map[string]Value{"plan": {Kind: 's', S: "pro"}}, map[string]*Agg{key: agg}), today) {
		t.Error("two events in the last 7 days (day -6 and today) should hold")
	}
	if p.Eval(facts(map[string]Value{"plan": {Kind: 's', S: "free"}}, map[string]*Agg{key: agg}), today) {
		t.Error("plan free is excluded")
	}
	if p.Eval(facts(nil, map[string]*Agg{key: agg}), today+1) {
		t.Error("tomorrow day -6 has left the window")
	}

	seen, err := Compile(&segmentsyncv1.SegmentRule{Event: &segmentsyncv1.EventCondition{Source: "api", Name: "Login", Seen: segmentsyncv1.SeenOperator_SEEN_OPERATOR_FIRST_BEFORE, SeenTime: timestamppb.New(time.Unix(100, 0))}})
	if err != nil {
		t.Fatal(err)
	}
	k := seen.Conds()[0].Key
	if !seen.Eval(facts(nil, map[string]*Agg{k: {First: 99_999_999, Last: 200_000_000}}), today) || seen.Eval(facts(nil, map[string]*Agg{k: {First: 100_000_000}}), today) || seen.Eval(facts(nil, nil), today) {
		t.Error("first seen before: first < seen_time, and never seen does not hold")
	}
}

func TestDay(t *testing.T) {
	if Day(0) != 0 || Day(-1) != -1 || Day(dayMicros) != 1 || Day(dayMicros-1) != 0 {
		t.Error("days are UTC floor divisions")
	}
	if EventTime(10, 5) != 5 || EventTime(5, 10) != 5 || EventTime(5, 0) != 5 {
		t.Error("event time is the earlier of timestamp and receipt")
	}
}
