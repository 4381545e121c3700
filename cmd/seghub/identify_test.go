package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// A tag on the page identifies its visitor over REST with a member key:
// POST /v1/users/{user_id}:identify stores AB Tasty's ABTastyVisitorId on
// the user (created if new), beside the properties it already had.
func TestIdentifyOverRESTWithMemberKey(t *testing.T) {
	r := start(t, t.TempDir(), nil)
	member := createKey(t, r, keyPattern.FindString(r.stdout.String()), "member")
	r.ok(t, "POST", "/v1/users:upsert", member, `{"users":[{"user_id":"u1","properties":{"plan":{"string_value":"pro"}}}]}`)
	body := r.ok(t, "POST", "/v1/users/u1:identify", member, `{"source":"abtasty","visitor_id":"vis-1"}`)
	if body["created"] == true || fmt.Sprint(body["properties"]) != "[ABTastyVisitorId]" {
		t.Fatalf("identify u1 = %v", body)
	}
	if body := r.ok(t, "POST", "/v1/users/u2:identify", member, `{"properties":{"ABTastyVisitorId":"vis-2"}}`); body["created"] != true {
		t.Fatalf("identify a new user = %v", body)
	}
	user := r.ok(t, "GET", "/v1/users/u1", member, "")
	props, _ := user["user"].(map[string]any)["properties"].(map[string]any)
	b, _ := json.Marshal(props)
	if len(props) != 2 || !strings.Contains(string(b), `"ABTastyVisitorId":{"string_value":"vis-1"}`) || !strings.Contains(string(b), `"pro"`) {
		t.Fatalf("u1 after identify = %v", user)
	}
	code, out := r.do(t, "POST", "/v1/users/u1:identify", member, `{"source":"heap","visitor_id":"x"}`)
	if msg, _ := out["message"].(string); code != 400 || !strings.Contains(msg, "source") || !strings.Contains(msg, "abtasty") {
		t.Fatalf("identify from an unknown source: %d %v; want 400 naming source and the known ones", code, out)
	}
}
