package audience

import (
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"
)

// FuzzCompile: any audience (as JSON) compiles or is refused with a clear
// error; a compiled one evaluates without panicking and names what decided.
func FuzzCompile(f *testing.F) {
	f.Add(`{"everyone":true}`)
	f.Add(`{"match":{"combinator":"COMBINATOR_AND","conditions":[{"operator":"OPERATOR_IN_SEGMENT","segment_id":"trial"},{"operator":"OPERATOR_LESS_THAN","property":"seats","number_value":10}]}}`)
	f.Add(`{"match":{"combinator":"COMBINATOR_OR","groups":[{"conditions":[{"operator":"OPERATOR_CONTAINS","property":"plan","string_value":"pro"}]}]}}`)
	f.Add(`{"match":{"conditions":[{"operator":"OPERATOR_EXISTS","property":"x","bool_value":true}]}}`)
	idx := &fakeIndex{users: map[string]uint32{"ann": 1}, props: map[uint32]map[string]*segmentsyncv1.PropertyValue{1: {"seats": pnum(3), "plan": pstr("pro")}}, segments: map[string]map[string]bool{"trial": {"ann": true}}}
	f.Fuzz(func(t *testing.T, js string) {
		var a targetingv1.Audience
		if protojson.Unmarshal([]byte(js), &a) != nil {
			return
		}
		p, err := Compile(&a, func(s string) bool { return s == "trial" })
		if err != nil {
			if err.Error() == "" {
				t.Fatal("refusal without a message")
			}
			return
		}
		for _, u := range []string{"ann", "ghost"} {
			if r := p.Eval(idx, u); r.DecidedBy == "" {
				t.Fatalf("no deciding condition for %s: %+v", u, r)
			}
		}
	})
}
