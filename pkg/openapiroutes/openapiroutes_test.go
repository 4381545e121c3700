package openapiroutes

import "testing"

func TestParse(t *testing.T) {
	doc, err := Parse([]byte(`{"paths":{
		"/v1/segments/{segment_id}":{"get":{"parameters":[{"name":"segment_id","in":"path","type":"string"}]},
			"patch":{"parameters":[{"name":"segment_id","in":"path","type":"string"},{"name":"body","in":"body","schema":{"$ref":"#/definitions/Seg"}}]}},
		"/v1/segments":{"get":{}}},
		"definitions":{"Seg":{"type":"object"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range doc.Routes {
		got = append(got, r.Method+" "+r.Fill("x1")+" "+map[bool]string{true: "body", false: "-"}[r.HasBody()])
	}
	want := []string{"GET /v1/segments -", "GET /v1/segments/x1 -", "PATCH /v1/segments/x1 body"}
	if len(got) != len(want) {
		t.Fatalf("routes %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("route %d: %q, want %q", i, got[i], want[i])
		}
	}
	if doc.Definitions["Seg"]["type"] != "object" {
		t.Errorf("definitions: %v", doc.Definitions)
	}
	if _, err := Parse([]byte("{")); err == nil {
		t.Error("a truncated document parsed")
	}
}

func TestEvery(t *testing.T) {
	if n := len(Every(t)); n < 40 {
		t.Fatalf("Every returned %d routes", n)
	}
}
