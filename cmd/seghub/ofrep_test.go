package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/open-feature/go-sdk-contrib/providers/ofrep"
	"github.com/open-feature/go-sdk/openfeature"
	"github.com/open-feature/go-sdk/openfeature/isolated"

	"github.com/seghub/seghub/pkg/openapiroutes"
)

// ofrepWorld is an all-in-one with a public segment "Beta" (member u1; u2
// known but not a member, u3 unknown), a private segment, and experiences
// on Beta (a tour), on everyone and disabled.
type ofrepWorld struct {
	r                        *running
	admin, client            string
	beta, private            string
	tour, everyone, disabled string
}

func newOFREPWorld(t *testing.T) *ofrepWorld {
	t.Helper()
	r := start(t, t.TempDir(), nil)
	// Experiences are refused while targeting still loads its index.
	deadline := time.Now().Add(60 * time.Second)
	for code, b := r.do(t, "GET", "/readyz", "", ""); code != 200; code, b = r.do(t, "GET", "/readyz", "", "") {
		if time.Now().After(deadline) {
			t.Fatalf("/readyz = %d %v after 60 s", code, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	w := &ofrepWorld{r: r, admin: keyPattern.FindString(r.stdout.String())}
	w.client = createKey(t, r, w.admin, "client")
	mk := func(path, body, field string) string {
		code, b := r.do(t, "POST", path, w.admin, body)
		if code != 200 {
			t.Fatalf("POST %s: %d %v", path, code, b)
		}
		for _, v := range b {
			if m, ok := v.(map[string]any); ok {
				return m[field].(string)
			}
		}
		t.Fatalf("POST %s: no %s in %v", path, field, b)
		return ""
	}
	w.beta = mk("/v1/segments", `{"name":"Beta"}`, "segment_id")
	w.private = mk("/v1/segments", `{"name":"Internal","visibility":"VISIBILITY_PRIVATE"}`, "segment_id")
	if code, b := r.do(t, "POST", "/v1/users:upsert", w.admin, `{"users":[{"user_id":"u1"},{"user_id":"u2"}]}`); code != 200 {
		t.Fatalf("upsert: %d %v", code, b)
	}
	for _, seg := range []string{w.beta, w.private} {
		if code, b := r.do(t, "POST", "/v1/segments/"+seg+"/members:add", w.admin, `{"user_ids":["u1"]}`); code != 200 {
			t.Fatalf("add members: %d %v", code, b)
		}
	}
	// An experience's audience may name only segments targeting knows:
	// wait for both segments' members to reach it first.
	waitFor(t, 20*time.Second, func() bool {
		for _, seg := range []string{w.beta, w.private} {
			if _, b := r.do(t, "GET", "/v1/targeting/segments/"+seg+"/members/u1", w.admin, ""); b["is_member"] != true {
				return false
			}
		}
		return true
	}, "targeting to see u1 in both segments")
	w.tour = mk("/v1/experiences", `{"name":"Beta tour","type":"EXPERIENCE_TYPE_PRODUCT_TOUR","audience":{"match":{"conditions":[{"operator":"OPERATOR_IN_SEGMENT","segment_id":"`+w.beta+`"}]}}}`, "experience_id")
	w.everyone = mk("/v1/experiences", `{"name":"Welcome checklist","type":"EXPERIENCE_TYPE_CHECKLIST","audience":{"everyone":true}}`, "experience_id")
	w.disabled = mk("/v1/experiences", `{"name":"Old tour","type":"EXPERIENCE_TYPE_PRODUCT_TOUR","audience":{"everyone":true},"disabled":true}`, "experience_id")
	return w
}

// ofrep posts an OFREP request and returns status, headers and the JSON body.
func (w *ofrepWorld) ofrep(t *testing.T, path string, header map[string]string, body string) (int, http.Header, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+w.r.httpAddr+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s: not JSON: %s", path, raw)
		}
	}
	return resp.StatusCode, resp.Header, out
}

func bearer(key string) map[string]string { return map[string]string{"Authorization": "Bearer " + key} }

// TestOFREPWithOpenFeatureGoSDK evaluates seghub's experiences and segments
// through the OpenFeature Go SDK's own OFREP provider with a client key.
func TestOFREPWithOpenFeatureGoSDK(t *testing.T) {
	w := newOFREPWorld(t)
	ctx := context.Background()
	api := isolated.NewAPI()
	defer func() { _ = api.Shutdown(ctx) }()
	if err := api.SetProviderAndWait(ctx, ofrep.NewProvider("http://"+w.r.httpAddr, ofrep.WithBearerToken(w.client))); err != nil {
		t.Fatal(err)
	}
	client := api.NewClient()
	member := openfeature.NewEvaluationContext("u1", map[string]any{"plan": "pro"})
	nonMember := openfeature.NewEvaluationContext("u2", nil)
	unknown := openfeature.NewEvaluationContext("u3", nil)

	d, err := client.BooleanValueDetails(ctx, w.tour, false, member)
	if err != nil || !d.Value || d.Reason != openfeature.TargetingMatchReason || d.Variant != "on" {
		t.Fatalf("member, tour: %+v %v", d, err)
	}
	if got, _ := d.FlagMetadata.GetString("decidedBy"); got != "match.conditions[0]" {
		t.Errorf("member, tour: decidedBy %q, want match.conditions[0] (metadata %v)", got, d.FlagMetadata)
	}
	if got, _ := d.FlagMetadata.GetString("type"); got != "product_tour" {
		t.Errorf("member, tour: type %q", got)
	}
	for _, ec := range []openfeature.EvaluationContext{nonMember, unknown} {
		// The default (true) must not come back: seghub answers false.
		d, err = client.BooleanValueDetails(ctx, w.tour, true, ec)
		if err != nil || d.Value || d.Reason != openfeature.DefaultReason {
			t.Errorf("%s, tour: %+v %v", ec.TargetingKey(), d, err)
		}
	}
	if d, err = client.BooleanValueDetails(ctx, w.everyone, false, nonMember); err != nil || !d.Value || d.Reason != openfeature.StaticReason {
		t.Errorf("everyone: %+v %v", d, err)
	}
	// A disabled experience answers false with reason DISABLED, which
	// OpenFeature SDKs resolve to the caller's own default.
	for _, def := range []bool{false, true} {
		if d, err = client.BooleanValueDetails(ctx, w.disabled, def, member); err != nil || d.Value != def || d.Reason != openfeature.DisabledReason {
			t.Errorf("disabled, default %v: %+v %v", def, d, err)
		}
	}
	if d, err = client.BooleanValueDetails(ctx, "segment:"+w.beta, false, member); err != nil || !d.Value || d.Reason != openfeature.TargetingMatchReason {
		t.Errorf("segment flag, member: %+v %v", d, err)
	}
	if d, err = client.BooleanValueDetails(ctx, "segment:"+w.beta, true, nonMember); err != nil || d.Value {
		t.Errorf("segment flag, non-member: %+v %v", d, err)
	}

	// Errors: the SDK returns the default with the protocol's error code.
	d, err = client.BooleanValueDetails(ctx, w.tour, true, openfeature.NewTargetlessEvaluationContext(map[string]any{"plan": "pro"}))
	if err == nil || !d.Value || d.ErrorCode != openfeature.TargetingKeyMissingCode {
		t.Errorf("no targeting key: %+v %v", d, err)
	}
	for _, flag := range []string{"exp_does_not_exist", "segment:" + w.private, "segment:nope"} {
		d, err = client.BooleanValueDetails(ctx, flag, true, member)
		if err == nil || !d.Value || d.ErrorCode != openfeature.FlagNotFoundCode {
			t.Errorf("flag %s: %+v %v, want FLAG_NOT_FOUND", flag, d, err)
		}
	}

	// X-API-Key works as well as the bearer header.
	api2 := isolated.NewAPI()
	defer func() { _ = api2.Shutdown(ctx) }()
	if err := api2.SetProviderAndWait(ctx, ofrep.NewProvider("http://"+w.r.httpAddr, ofrep.WithApiKeyAuth(w.client))); err != nil {
		t.Fatal(err)
	}
	if d, err = api2.NewClient().BooleanValueDetails(ctx, w.tour, false, member); err != nil || !d.Value {
		t.Errorf("X-API-Key: %+v %v", d, err)
	}
	// A revoked or made-up key gets the default and an error.
	api3 := isolated.NewAPI()
	defer func() { _ = api3.Shutdown(ctx) }()
	if err := api3.SetProviderAndWait(ctx, ofrep.NewProvider("http://"+w.r.httpAddr, ofrep.WithBearerToken("sghk_notakey"))); err != nil {
		t.Fatal(err)
	}
	if d, err = api3.NewClient().BooleanValueDetails(ctx, w.tour, false, member); err == nil || d.Value || d.ErrorCode != openfeature.GeneralCode {
		t.Errorf("unknown key: %+v %v", d, err)
	}
}

// TestOFREPBulkAndETag checks the bulk answer's flags and its ETag: the same
// tag answers 304 until a membership or an experience changes, and never
// for another user.
func TestOFREPBulkAndETag(t *testing.T) {
	w := newOFREPWorld(t)
	u1 := `{"context":{"targetingKey":"u1"}}`
	code, h, b := w.ofrep(t, "/ofrep/v1/evaluate/flags", bearer(w.client), u1)
	if code != 200 || h.Get("ETag") == "" {
		t.Fatalf("bulk: %d %v %v", code, h, b)
	}
	flags := map[string]map[string]any{}
	for _, f := range b["flags"].([]any) {
		m := f.(map[string]any)
		flags[m["key"].(string)] = m
	}
	want := map[string]bool{w.tour: true, w.everyone: true, w.disabled: false, "segment:" + w.beta: true}
	for k, v := range want {
		if f, ok := flags[k]; !ok || f["value"] != v {
			t.Errorf("bulk flag %s: %v, want value %v", k, f, v)
		}
	}
	if _, ok := flags["segment:"+w.private]; ok || len(flags) != len(want) {
		t.Errorf("bulk flags %v: want exactly %v (private segments are never flags)", flags, want)
	}
	if flags[w.tour]["reason"] != "TARGETING_MATCH" || flags[w.tour]["metadata"].(map[string]any)["decidedBy"] != "match.conditions[0]" {
		t.Errorf("tour flag: %v", flags[w.tour])
	}

	etag := h.Get("ETag")
	with := func(tag string) map[string]string {
		return map[string]string{"Authorization": "Bearer " + w.client, "If-None-Match": tag}
	}
	if code, h2, _ := w.ofrep(t, "/ofrep/v1/evaluate/flags", with(etag), u1); code != 304 || h2.Get("ETag") != etag {
		t.Fatalf("unchanged re-fetch: %d etag %q, want 304 with %q", code, h2.Get("ETag"), etag)
	}
	if code, _, _ := w.ofrep(t, "/ofrep/v1/evaluate/flags", with(`"other", W/`+etag), u1); code != 304 {
		t.Errorf("a weak tag in a list: %d, want 304", code)
	}
	// Another user's answer is not u1's: its tag never matches.
	if code, _, b := w.ofrep(t, "/ofrep/v1/evaluate/flags", with(etag), `{"context":{"targetingKey":"u2"}}`); code != 200 || len(b["flags"].([]any)) != len(want) {
		t.Errorf("u2 with u1's tag: %d %v", code, b)
	}
	// Another user's membership change moves the index version but not
	// u1's answer: still a 304, with a fresh tag.
	if code, b := w.r.do(t, "POST", "/v1/segments/"+w.beta+"/members:add", w.admin, `{"user_ids":["u2"]}`); code != 200 {
		t.Fatalf("add u2: %d %v", code, b)
	}
	waitFor(t, 20*time.Second, func() bool {
		_, b := w.r.do(t, "GET", "/v1/targeting/segments/"+w.beta+"/members/u2", w.admin, "")
		return b["is_member"] == true
	}, "targeting to see u2 in Beta")
	code, h, _ = w.ofrep(t, "/ofrep/v1/evaluate/flags", with(etag), u1)
	if code != 304 || h.Get("ETag") == etag || h.Get("ETag") == "" {
		t.Fatalf("u1 after u2 joined Beta: %d etag %q (was %q), want 304 with a new tag", code, h.Get("ETag"), etag)
	}
	etag = h.Get("ETag")
	if code, _, _ := w.ofrep(t, "/ofrep/v1/evaluate/flags", with(etag), u1); code != 304 {
		t.Fatalf("the new tag: %d, want 304", code)
	}
	// u1's own membership change changes u1's answer: a full answer follows.
	if code, b := w.r.do(t, "POST", "/v1/segments/"+w.beta+"/members:remove", w.admin, `{"user_ids":["u1"]}`); code != 200 {
		t.Fatalf("remove: %d %v", code, b)
	}
	waitFor(t, 20*time.Second, func() bool {
		code, _, _ := w.ofrep(t, "/ofrep/v1/evaluate/flags", with(etag), u1)
		return code == 200
	}, "a membership change to end the 304s")
	code, h, b = w.ofrep(t, "/ofrep/v1/evaluate/flags", with(etag), u1)
	if code != 200 || h.Get("ETag") == etag {
		t.Fatalf("after the change: %d %q", code, h.Get("ETag"))
	}
	for _, f := range b["flags"].([]any) {
		if m := f.(map[string]any); m["key"] == w.tour && m["value"] != false {
			t.Errorf("u1 left Beta but the tour is still %v", m)
		}
	}
	// An experience change (the index version stays) also ends the 304s.
	etag = h.Get("ETag")
	if code, b := w.r.do(t, "PATCH", "/v1/experiences/"+w.everyone, w.admin, `{"enabled":false}`); code != 200 {
		t.Fatalf("disable: %d %v", code, b)
	}
	if code, _, _ := w.ofrep(t, "/ofrep/v1/evaluate/flags", with(etag), u1); code != 200 {
		t.Errorf("after an experience change: %d, want 200", code)
	}
}

// TestOFREPErrors checks the protocol's error shapes and bounds.
func TestOFREPErrors(t *testing.T) {
	w := newOFREPWorld(t)
	cases := []struct {
		name, path string
		header     map[string]string
		body       string
		code       int
		errorCode  string
	}{
		{"no key", "/ofrep/v1/evaluate/flags", nil, `{"context":{"targetingKey":"u1"}}`, 401, ""},
		{"unknown key", "/ofrep/v1/evaluate/flags", bearer("sghk_nope"), `{"context":{"targetingKey":"u1"}}`, 401, ""},
		{"no targeting key", "/ofrep/v1/evaluate/flags", bearer(w.client), `{"context":{"plan":"pro"}}`, 400, "TARGETING_KEY_MISSING"},
		{"empty body", "/ofrep/v1/evaluate/flags", bearer(w.client), ``, 400, "TARGETING_KEY_MISSING"},
		{"empty targeting key", "/ofrep/v1/evaluate/flags/" + w.tour, bearer(w.client), `{"context":{"targetingKey":""}}`, 400, "TARGETING_KEY_MISSING"},
		{"number targeting key", "/ofrep/v1/evaluate/flags/" + w.tour, bearer(w.client), `{"context":{"targetingKey":7}}`, 400, "INVALID_CONTEXT"},
		{"control character", "/ofrep/v1/evaluate/flags", bearer(w.client), `{"context":{"targetingKey":"u\u001b1"}}`, 400, "INVALID_CONTEXT"},
		{"long targeting key", "/ofrep/v1/evaluate/flags", bearer(w.client), `{"context":{"targetingKey":"` + strings.Repeat("u", 257) + `"}}`, 400, "INVALID_CONTEXT"},
		{"not JSON", "/ofrep/v1/evaluate/flags", bearer(w.client), `{"context":`, 400, "INVALID_CONTEXT"},
		{"too large", "/ofrep/v1/evaluate/flags", bearer(w.client), `{"context":{"targetingKey":"u1","x":"` + strings.Repeat("a", 70<<10) + `"}}`, 413, "GENERAL"},
		{"unknown flag", "/ofrep/v1/evaluate/flags/exp_nope", bearer(w.client), `{"context":{"targetingKey":"u1"}}`, 404, "FLAG_NOT_FOUND"},
	}
	for _, c := range cases {
		code, _, b := w.ofrep(t, c.path, c.header, c.body)
		if code != c.code || (c.errorCode != "" && b["errorCode"] != c.errorCode) {
			t.Errorf("%s: %d %v, want %d %s", c.name, code, b, c.code, c.errorCode)
		}
		if code >= 400 && b["errorDetails"] == "" {
			t.Errorf("%s: no errorDetails: %v", c.name, b)
		}
	}
	if _, _, b := w.ofrep(t, "/ofrep/v1/evaluate/flags/exp_nope", bearer(w.client), `{"context":{"targetingKey":"u1"}}`); b["key"] != "exp_nope" {
		t.Errorf("FLAG_NOT_FOUND names the key: %v", b)
	}

	// Environment scoping: another environment's client key sees none of
	// these flags.
	code, b := w.r.do(t, "POST", "/v1/environments", w.admin, `{"name":"Staging"}`)
	if code != 200 {
		t.Fatalf("create environment: %d %v", code, b)
	}
	otherClient := createKey(t, w.r, b["admin_secret"].(string), "client")
	// Until its index has loaded, a new environment answers 503 with Retry-After.
	waitFor(t, 20*time.Second, func() bool {
		code, h, _ := w.ofrep(t, "/ofrep/v1/evaluate/flags", bearer(otherClient), `{"context":{"targetingKey":"u1"}}`)
		if code == 503 && h.Get("Retry-After") == "" {
			t.Errorf("503 without Retry-After")
		}
		return code == 200
	}, "the new environment's index to load")
	if code, _, b := w.ofrep(t, "/ofrep/v1/evaluate/flags/"+w.tour, bearer(otherClient), `{"context":{"targetingKey":"u1"}}`); code != 404 {
		t.Errorf("another environment's key on this tour: %d %v", code, b)
	}
	if _, _, b := w.ofrep(t, "/ofrep/v1/evaluate/flags", bearer(otherClient), `{"context":{"targetingKey":"u1"}}`); len(b["flags"].([]any)) != 0 {
		t.Errorf("another environment's bulk answer: %v", b)
	}

	// CORS: a page on another origin may call OFREP with a key header.
	req, _ := http.NewRequest("OPTIONS", "http://"+w.r.httpAddr+"/ofrep/v1/evaluate/flags", nil)
	req.Header.Set("Origin", "https://shop.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "*" || !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Errorf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
	if _, h, _ := w.ofrep(t, "/ofrep/v1/evaluate/flags", bearer(w.client), `{"context":{"targetingKey":"u1"}}`); !strings.Contains(h.Get("Access-Control-Expose-Headers"), "ETag") {
		t.Errorf("the ETag is not exposed to scripts: %v", h)
	}
}

// TestClientKeyGetsNothingElse calls every REST route of the OpenAPI
// document with a client key: each refuses it with 403 before doing
// anything, while OFREP answers it. (TestRoleMatrix does the same for every
// gRPC method.)
func TestClientKeyGetsNothingElse(t *testing.T) {
	r := start(t, t.TempDir(), nil)
	admin := keyPattern.FindString(r.stdout.String())
	client := createKey(t, r, admin, "client")
	for _, rt := range openapiroutes.Every(t) {
		body := ""
		if rt.HasBody() {
			body = "{}"
		}
		code, b := r.do(t, rt.Method, rt.Fill("x1"), client, body)
		if code != http.StatusForbidden {
			t.Errorf("%s %s with a client key: %d %v, want 403", rt.Method, rt.Path, code, b)
		}
	}
	// The console's own routes are static files; the OAuth callback and
	// webhooks take no key. OFREP is the client key's one door.
	code, _ := r.do(t, "POST", "/ofrep/v1/evaluate/flags", client, `{"context":{"targetingKey":"u1"}}`)
	if code != 200 {
		t.Errorf("OFREP with a client key: %d", code)
	}
	if code, b := r.do(t, "GET", "/v1/api-keys", admin, ""); code != 200 || !strings.Contains(fmt.Sprint(b), "ROLE_CLIENT") {
		t.Errorf("the client key is listed with its role: %d %v", code, b)
	}
}
