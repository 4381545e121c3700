package main

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/seghub/seghub/pkg/config"
)

// REST lookups in the all-in-one call targeting in-process (no loopback gRPC
// hop); they must be checked exactly as before: the key, its environment,
// identifier validation, error mapping, metrics, and a caller's sampled trace
// continued into the lookup.
func TestInProcessRESTLookup(t *testing.T) {
	r := start(t, t.TempDir(), func(c *config.Config) { c.LogLevel = "debug" })
	root := keyPattern.FindString(r.stdout.String())
	a, b := newTenant(t, r, root, "A"), newTenant(t, r, root, "B")
	seg := field(r.ok(t, "POST", "/v1/segments", a.member, `{"name":"Tour audience","visibility":"VISIBILITY_PUBLIC"}`), "segment", "segment_id")
	r.ok(t, "POST", "/v1/segments/"+seg+"/members:add", a.member, `{"user_ids":["alice"]}`)
	lookup := "/v1/targeting/segments/" + seg + "/members/"
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := r.do(t, "GET", lookup+"alice", a.member, "")
		if code == 200 && body["is_member"] == true {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice never became a member: %d %v", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}

	deadline = time.Now().Add(30 * time.Second)
	if _, body := r.do(t, "GET", lookup+"bob", a.member, ""); body["is_member"] != false {
		t.Errorf("bob: %v, want is_member false", body)
	}
	for _, c := range []struct {
		name, key, user string
		code            int
		msg             string
	}{
		{"no key", "", "alice", 401, "missing API key"},
		{"unknown key", "sghk_0123456789abcdefghijklmnopqrstuv", "alice", 401, "invalid API key"},
		// B's key acts for B, where A's segment does not exist.
		{"other environment", b.member, "alice", 404, "not found"},
		{"control character", a.member, "al%01ice", 400, "user_id"},
		{"unknown segment", a.member, "alice", 404, "not found"},
	} {
		path := lookup + c.user
		if c.name == "unknown segment" {
			path = "/v1/targeting/segments/seg_missing/members/alice"
		}
		code, body := r.do(t, "GET", path, c.key, "")
		for code == 503 && time.Now().Before(deadline) { // B's replica still loading
			time.Sleep(20 * time.Millisecond)
			code, body = r.do(t, "GET", path, c.key, "")
		}
		msg, _ := body["message"].(string)
		if code != c.code || !strings.Contains(msg, c.msg) {
			t.Errorf("%s: %d %v, want %d with %q", c.name, code, body, c.code, c.msg)
		}
	}

	// A sampled caller: the lookup's log line carries the caller's trace id
	// and a span id of its own (the gateway's and the RPC's spans).
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequest("GET", "http://"+r.httpAddr+lookup+"alice", nil)
	req.Header.Set("Authorization", "Bearer "+a.member)
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("traced lookup: %v %v", resp, err)
	}
	resp.Body.Close()
	line := regexp.MustCompile(`\{[^\n]*"method":"/seghub.targeting.v1.TargetingService/CheckMembership"[^\n]*"trace_id":"` + traceID + `"[^\n]*`).FindString(r.stderr.String())
	if line == "" || strings.Contains(line, `"span_id":"00f067aa0ba902b7"`) {
		t.Errorf("no CheckMembership log line in the caller's trace with a span of its own:\n%s", r.stderr)
	}

	// The lookups are counted as gRPC calls of targeting, by status (keys are
	// refused by the gateway before any call).
	_, metrics := r.exchange(t, "GET", "/metrics", "", "")
	for _, code := range []string{"OK", "NOT_FOUND", "INVALID_ARGUMENT"} {
		re := regexp.MustCompile(`rpc_server_call_duration_seconds_count\{[^}]*rpc_method="seghub.targeting.v1.TargetingService/CheckMembership"[^}]*rpc_response_status_code="` + code + `"`)
		if !re.Match(metrics) {
			t.Errorf("no rpc.server.call.duration series for CheckMembership %s in /metrics", code)
		}
	}
}
