package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/seghub/seghub/pkg/auth"
	"github.com/seghub/seghub/pkg/config"
	"github.com/seghub/seghub/pkg/destinations"
	"github.com/seghub/seghub/pkg/openapiroutes"
	"github.com/seghub/seghub/services/destsim"
)

// controlChars are sent inside every id and name: NUL (PostgreSQL refuses
// it), ESC (terminal escapes), newline (forged log lines, header
// injection) and DEL.
var controlChars = []string{"\x00", "\x1b", "\n", "\x7f"}

// idFields is every REST route and every string field it takes, as the
// OpenAPI document names them: "path.<param>", "query.<param>" or
// "body.<field>" ("[]" an element of a list, "{key}" a map key, "{}" a map
// value). TestIDFieldsCoverOpenAPI fails when a route or field is missing,
// so a new id field is tested from the day it is added.
var idFields = map[string][]string{
	"GET /v1/api-keys":                                          {"query.page_token"},
	"POST /v1/api-keys":                                         {"body.name"},
	"POST /v1/api-keys/{id}:revoke":                             {"path.id"},
	"GET /v1/connections":                                       {"query.type", "query.page_token"},
	"POST /v1/connections":                                      {"body.type", "body.name", "body.credentials{key}", "body.credentials{}", "body.settings.identity_property", "body.settings.property_prefix"},
	"GET /v1/connections/{connection_id}":                       {"path.connection_id"},
	"DELETE /v1/connections/{connection_id}":                    {"path.connection_id"},
	"PATCH /v1/connections/{connection_id}":                     {"path.connection_id", "body.name", "body.settings.identity_property", "body.settings.property_prefix", "body.credentials{key}", "body.credentials{}"},
	"POST /v1/connections:authorize":                            {"body.type", "body.name", "body.account", "body.settings.identity_property", "body.settings.property_prefix"},
	"GET /v1/dead-letters":                                      {"query.connection_id", "query.page_token"},
	"POST /v1/dead-letters:replay":                              {"body.dead_letter_ids[]", "body.connection_id"},
	"GET /v1/destination-types":                                 {},
	"GET /v1/environments":                                      {},
	"POST /v1/environments":                                     {"body.name"},
	"GET /v1/event-routes":                                      {"query.page_token"},
	"POST /v1/event-routes":                                     {"body.connection_id", "body.sources[]", "body.event_names[]", "body.deliver_as"},
	"DELETE /v1/event-routes/{route_id}":                        {"path.route_id"},
	"GET /v1/event-schemas":                                     {"query.source"},
	"GET /v1/event-sinks":                                       {},
	"POST /v1/events:track":                                     {"body.event.event_id", "body.event.source", "body.event.connection_id", "body.event.user_id", "body.event.name"},
	"POST /v1/events:trackBatch":                                {"body.events[].event_id", "body.events[].source", "body.events[].connection_id", "body.events[].user_id", "body.events[].name"},
	"GET /v1/experiences":                                       {"query.page_token"},
	"POST /v1/experiences":                                      {"body.name", "body.audience.match.conditions[].segment_id", "body.audience.match.conditions[].property", "body.audience.match.conditions[].string_value"},
	"GET /v1/experiences/{experience_id}":                       {"path.experience_id"},
	"DELETE /v1/experiences/{experience_id}":                    {"path.experience_id"},
	"PATCH /v1/experiences/{experience_id}":                     {"path.experience_id", "body.name", "body.audience.match.conditions[].segment_id", "body.audience.match.conditions[].property", "body.audience.match.conditions[].string_value"},
	"GET /v1/experiences/{experience_id}/users/{user_id}":       {"path.experience_id", "path.user_id"},
	"GET /v1/segments":                                          {"query.page_token", "query.name_contains", "query.targetable_by"},
	"GET /v1/user-properties":                                   {},
	"POST /v1/segments":                                         {"body.name", "body.description", "body.rule.property.property", "body.rule.property.value.string_value", "body.rule.event.source", "body.rule.event.name", "body.rule.event.where[].property", "body.rule.event.where[].string_value", "body.rule.event.start_date", "body.rule.event.end_date"},
	"POST /v1/segments:previewRule":                             {"body.rule.property.property", "body.rule.property.value.string_value", "body.rule.event.source", "body.rule.event.name", "body.rule.event.where[].property", "body.rule.event.where[].string_value", "body.rule.event.start_date", "body.rule.event.end_date"},
	"GET /v1/segments/{segment_id}":                             {"path.segment_id"},
	"DELETE /v1/segments/{segment_id}":                          {"path.segment_id"},
	"PATCH /v1/segments/{segment_id}":                           {"path.segment_id", "body.name", "body.description", "body.rule.property.property", "body.rule.property.value.string_value", "body.rule.event.source", "body.rule.event.name", "body.rule.event.where[].property", "body.rule.event.where[].string_value", "body.rule.event.start_date", "body.rule.event.end_date"},
	"GET /v1/segments/{segment_id}/members":                     {"path.segment_id", "query.page_token"},
	"GET /v1/segments/{segment_id}/members/{user_id}":           {"path.segment_id", "path.user_id"},
	"POST /v1/segments/{segment_id}/members:add":                {"path.segment_id", "body.user_ids[]"},
	"POST /v1/segments/{segment_id}/members:remove":             {"path.segment_id", "body.user_ids[]"},
	"GET /v1/sources/{connection_id}/sync-tasks":                {"path.connection_id", "query.page_token"},
	"GET /v1/syncs":                                             {"query.segment_id", "query.connection_id", "query.page_token"},
	"POST /v1/syncs":                                            {"body.segment_id", "body.connection_id", "body.identity_property"},
	"GET /v1/syncs/{sync_id}":                                   {"path.sync_id"},
	"PATCH /v1/syncs/{sync_id}":                                 {"path.sync_id", "body.identity_property"},
	"GET /v1/syncs/{sync_id}/runs":                              {"path.sync_id", "query.page_token"},
	"POST /v1/syncs/{sync_id}:disable":                          {"path.sync_id"},
	"POST /v1/syncs/{sync_id}:dryRun":                           {"path.sync_id"},
	"POST /v1/syncs/{sync_id}:run":                              {"path.sync_id"},
	"GET /v1/targeting/segments":                                {"query.page_token"},
	"GET /v1/targeting/segments/{segment_id}/members/{user_id}": {"path.segment_id", "path.user_id"},
	"GET /v1/targeting/users/{user_id}/experiences":             {"path.user_id"},
	"GET /v1/targeting/users/{user_id}/segments":                {"path.user_id"},
	"POST /v1/targeting:batchCheck":                             {"body.checks[].user_id", "body.checks[].segment_id"},
	"GET /v1/users/{user_id}":                                   {"path.user_id"},
	"POST /v1/users/{user_id}:identify":                         {"path.user_id", "body.source", "body.visitor_id", "body.properties{key}", "body.properties{}"},
	"DELETE /v1/users/{user_id}":                                {"path.user_id"},
	"POST /v1/users:upsert":                                     {"body.users[].user_id", "body.users[].properties{key}", "body.users[].properties{}.string_value"},
	"GET /v1/whoami":                                            {},
}

// notIDs are string fields of the OpenAPI document that are neither ids nor
// names, with why.
var notIDs = map[string]string{
	"body.interval": "a google.protobuf.Duration, parsed by the JSON decoder",
}

// freeTextFields may hold newlines and the like; only NUL is refused.
var freeTextFields = map[string]bool{"description": true, "string_value": true, "message": true}

// openAPIFields lists the string fields of every operation of the served
// OpenAPI document, in idFields' notation.
func openAPIFields(t *testing.T) map[string][]string {
	t.Helper()
	d, err := openapiroutes.Served()
	if err != nil {
		t.Fatal(err)
	}
	var walk func(s map[string]any, prefix string, seen map[string]bool, out *[]string)
	walk = func(s map[string]any, prefix string, seen map[string]bool, out *[]string) {
		if ref, ok := s["$ref"].(string); ok {
			name := ref[strings.LastIndex(ref, "/")+1:]
			if seen[name] {
				return // a recursive message (condition groups) is listed once
			}
			seen[name] = true
			defer delete(seen, name)
			walk(d.Definitions[name], prefix, seen, out)
			return
		}
		if props, ok := s["properties"].(map[string]any); ok {
			for k, v := range props {
				p := k
				if prefix != "" {
					p = prefix + "." + k
				}
				walk(v.(map[string]any), p, seen, out)
			}
		}
		if ap, ok := s["additionalProperties"].(map[string]any); ok {
			*out = append(*out, prefix+"{key}")
			walk(ap, prefix+"{}", seen, out)
		}
		if items, ok := s["items"].(map[string]any); ok {
			walk(items, prefix+"[]", seen, out)
		}
		if s["type"] == "string" && s["enum"] == nil && s["format"] == nil && s["readOnly"] != true {
			*out = append(*out, prefix)
		}
	}
	got := map[string][]string{}
	for _, op := range d.Routes {
		fields := []string{}
		for _, p := range op.Parameters {
			switch {
			case p.In == "body":
				var body []string
				walk(p.Schema, "", map[string]bool{}, &body)
				for _, f := range body {
					if p.Name != "body" {
						f = p.Name + "." + f
					}
					fields = append(fields, "body."+f)
				}
			case (p.Type == "string" && p.Enum == nil && p.Format == "") || (p.Type == "array" && p.Items["type"] == "string" && p.Items["enum"] == nil):
				fields = append(fields, p.In+"."+p.Name)
			}
		}
		got[op.Method+" "+op.Path] = fields
	}
	return got
}

// TestIDFieldsCoverOpenAPI keeps idFields equal to what the served OpenAPI
// document offers.
func TestIDFieldsCoverOpenAPI(t *testing.T) {
	checkCoverage(t, openAPIFields(t))
}

func checkCoverage(t *testing.T, api map[string][]string) {
	t.Helper()
	for route, fields := range api {
		listed, ok := idFields[route]
		if !ok {
			t.Errorf("route %s is not in idFields: list its id and name fields there", route)
			continue
		}
		for _, f := range fields {
			if !contains(listed, f) && notIDs[f] == "" {
				t.Errorf("%s takes %s, which idFields does not list: add it (or to notIDs, saying why)", route, f)
			}
		}
		for _, f := range listed {
			if !contains(fields, f) {
				t.Errorf("idFields lists %s %s, which the OpenAPI document does not offer", route, f)
			}
		}
	}
	for route := range idFields {
		if _, ok := api[route]; !ok {
			t.Errorf("idFields lists route %s, which the OpenAPI document does not offer", route)
		}
	}
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// violationField is the field a refusal names for an idFields field:
// "body.events[].user_id" → "events[0].user_id", "body.credentials{key}" →
// "credentials", "body.credentials{}" → `credentials["k"]`.
func violationField(f string) string {
	_, f, _ = strings.Cut(f, ".")
	f = strings.ReplaceAll(f, "[]", "[0]")
	if strings.HasSuffix(f, "{key}") {
		return strings.TrimSuffix(f, "{key}")
	}
	return strings.ReplaceAll(f, "{}", `["k"]`)
}

// jsonWith builds a request body holding value at field (body notation);
// mapValue is what a map key maps to.
func jsonWith(field, value string, mapValue any) string {
	var build func(path string) any
	build = func(path string) any {
		name, rest, _ := strings.Cut(path, ".")
		var v any = value
		if rest != "" {
			v = build(rest)
		}
		switch {
		case strings.HasSuffix(name, "[]"):
			return map[string]any{strings.TrimSuffix(name, "[]"): []any{v}}
		case strings.HasSuffix(name, "{key}"):
			return map[string]any{strings.TrimSuffix(name, "{key}"): map[string]any{value: mapValue}}
		case strings.HasSuffix(name, "{}"):
			return map[string]any{strings.TrimSuffix(name, "{}"): map[string]any{"k": v}}
		}
		return map[string]any{name: v}
	}
	b, _ := json.Marshal(build(field))
	return string(b)
}

// restViolations returns the fields a REST error names.
func restViolations(raw []byte) []string {
	var e struct {
		Details []struct {
			FieldViolations []struct{ Field string } `json:"field_violations"`
		}
	}
	_ = json.Unmarshal(raw, &e)
	var out []string
	for _, d := range e.Details {
		for _, v := range d.FieldViolations {
			out = append(out, v.Field)
		}
	}
	return out
}

var pathParam = regexp.MustCompile(`\{([a-z_]+)\}`)

// TestIDFieldsRefuseControlCharacters sends, to the all-in-one, each id and
// name field of each REST route holding each control character: every
// answer is 400 naming the field, and nothing is stored.
func TestIDFieldsRefuseControlCharacters(t *testing.T) {
	r := start(t, t.TempDir(), nil)
	key := keyPattern.FindString(r.stdout.String())
	// Something in every list, so "nothing stored" compares non-empty lists.
	r.ok(t, "POST", "/v1/segments", key, `{"name":"Trial"}`)
	r.ok(t, "POST", "/v1/users:upsert", key, `{"users":[{"user_id":"user-1","properties":{"plan":{"string_value":"pro"}}}]}`)
	lists := []string{"/v1/segments", "/v1/api-keys", "/v1/connections", "/v1/experiences", "/v1/event-routes", "/v1/environments",
		"/v1/syncs", "/v1/dead-letters", "/v1/users/user-1", "/v1/event-sinks"}
	snapshot := func() map[string]string {
		out := map[string]string{}
		for _, p := range lists {
			code, body := r.exchange(t, "GET", p, key, "")
			out[p] = fmt.Sprint(code, " ", string(body))
		}
		return out
	}
	before := snapshot()

	routes := make([]string, 0, len(idFields))
	for route := range idFields {
		routes = append(routes, route)
	}
	sort.Strings(routes)
	sent := 0
	for _, route := range routes {
		method, tmpl, _ := strings.Cut(route, " ")
		for _, field := range idFields[route] {
			where, name, _ := strings.Cut(field, ".")
			chars := controlChars
			if freeTextFields[name[strings.LastIndex(name, ".")+1:]] {
				chars = []string{"\x00"}
			}
			for _, c := range chars {
				bad := "a" + c + "b"
				path := pathParam.ReplaceAllStringFunc(tmpl, func(p string) string {
					if where == "path" && p == "{"+name+"}" {
						return url.PathEscape(bad)
					}
					return "x"
				})
				body := ""
				if method != "GET" && method != "DELETE" {
					body = "{}"
				}
				switch where {
				case "query":
					path += "?" + url.Values{name: {bad}}.Encode()
				case "body":
					var mapValue any = "v"
					for _, f := range idFields[route] {
						if strings.HasPrefix(f, strings.TrimSuffix(field, "{key}")+"{}.") {
							mapValue = map[string]any{} // the map holds messages
						}
					}
					body = jsonWith(name, bad, mapValue)
				}
				sent++
				code, raw := r.exchange(t, method, path, key, body)
				want := violationField(field)
				if code != 400 || !contains(restViolations(raw), want) {
					t.Errorf("%s %s with %q: %d %s; want 400 naming %s", route, field, c, code, raw, want)
				}
			}
		}
	}
	after := snapshot()
	for _, p := range lists {
		if before[p] != after[p] {
			t.Errorf("%s changed:\nbefore %s\nafter  %s", p, before[p], after[p])
		}
	}
	t.Logf("%d requests to %d routes refused", sent, len(routes))
}

// TestWebhookIDsRefuseControlCharacters: signed inbound webhooks (Heap
// segments, Appcues and CommandBar events) go through the same validator.
func TestWebhookIDsRefuseControlCharacters(t *testing.T) {
	sim := httptest.NewServer(destsim.New(destsim.DemoCredentials()))
	defer sim.Close()
	r := start(t, t.TempDir(), func(c *config.Config) { c.AppcuesURL = sim.URL })
	key := keyPattern.FindString(r.stdout.String())
	before := fmt.Sprint(r.ok(t, "GET", "/v1/segments", key, ""))

	heap := r.ok(t, "POST", "/v1/connections", key, `{"type":"heap","name":"Heap"}`)
	heapPath, heapSecret := heap["connection"].(map[string]any)["webhook_path"].(string), heap["signing_secret"].(string)
	ac := r.ok(t, "POST", "/v1/connections", key, `{"type":"appcues","name":"Appcues","credentials":{"account_id":"demo","api_key":"demo-key","api_secret":"demo-secret"},"settings":{"send_events":true}}`)
	acID, acSecret := ac["connection"].(map[string]any)["connection_id"].(string), ac["signing_secret"].(string)
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	for _, c := range controlChars {
		bad := "a" + c + "b"
		heapPages := map[string]string{
			"data.segment.id":             fmt.Sprintf(`{"action_type":"segment.users.sync","data":{"segment":{"id":%s,"name":"S"},"sync_info":{"page_number":1,"total_pages":1,"sync_task_id":"t"},"add":[{"id":"u"}]}}`, q(bad)),
			"data.segment.name":           fmt.Sprintf(`{"action_type":"segment.users.sync","data":{"segment":{"id":"s","name":%s},"sync_info":{"page_number":1,"total_pages":1,"sync_task_id":"t"},"add":[{"id":"u"}]}}`, q(bad)),
			"data.sync_info.sync_task_id": fmt.Sprintf(`{"action_type":"segment.users.sync","data":{"segment":{"id":"s","name":"S"},"sync_info":{"page_number":1,"total_pages":1,"sync_task_id":%s},"add":[{"id":"u"}]}}`, q(bad)),
			"data.add[0].id":              fmt.Sprintf(`{"action_type":"segment.users.sync","data":{"segment":{"id":"s","name":"S"},"sync_info":{"page_number":1,"total_pages":1,"sync_task_id":"t"},"add":[{"id":%s}]}}`, q(bad)),
			"data.remove[0].id":           fmt.Sprintf(`{"action_type":"segment.users.sync","data":{"segment":{"id":"s","name":"S"},"sync_info":{"page_number":1,"total_pages":1,"sync_task_id":"t"},"remove":[{"id":%s}]}}`, q(bad)),
		}
		for field, page := range heapPages {
			code, body := r.post(t, heapPath, destinations.Sign(heapSecret, time.Now(), []byte(page)), []byte(page))
			if code != 400 || !strings.Contains(fmt.Sprint(body), field+":") {
				t.Errorf("heap page with %q in %s: %d %v", c, field, code, body)
			}
		}
		events := map[string]string{
			"user_id":                  fmt.Sprintf(`{"id":"e1","name":"appcues:flow_started","user_id":%s,"attributes":{"flowId":"f"}}`, q(bad)),
			"event_id":                 fmt.Sprintf(`{"id":%s,"name":"appcues:flow_started","user_id":"u","attributes":{"flowId":"f"}}`, q(bad)),
			"name":                     fmt.Sprintf(`{"id":"e1","name":%s,"user_id":"u","attributes":{"flowId":"f"}}`, q("appcues:flow_started"+c)),
			"properties.appcuesUserID": fmt.Sprintf(`{"id":"e1","name":"appcues:flow_started","user_id":"u","attributes":{"flowId":"f","appcuesUserID":%s}}`, q(bad)),
			"properties":               fmt.Sprintf(`{"id":"e1","name":"appcues:flow_started","user_id":"u","attributes":{"flowId":"f",%s:1}}`, q(bad)),
		}
		for field, ev := range events {
			code, body := r.postEvents(t, "/webhooks/appcues/"+acID, destinations.Sign(acSecret, time.Now(), []byte(ev)), []byte(ev))
			if code != 400 || !strings.Contains(fmt.Sprint(body), "events[0]."+field+":") {
				t.Errorf("appcues event with %q in %s: %d %v", c, field, code, body)
			}
		}
		// The connection id in the path, before any signature is looked at.
		for _, tool := range []string{"appcues", "commandbar", "heap"} {
			code, body := r.postEvents(t, "/webhooks/"+tool+"/"+url.PathEscape("conn"+c), "ts:1,hmac:00", []byte(`{}`))
			if code != 400 || !strings.Contains(fmt.Sprint(body), "connection_id") {
				t.Errorf("%s webhook path with %q: %d %v", tool, c, code, body)
			}
		}
	}
	if after := fmt.Sprint(r.ok(t, "GET", "/v1/segments", key, "")); after != before {
		t.Errorf("segments changed by refused webhooks:\nbefore %s\nafter  %s", before, after)
	}
	// Had a refused event (all were "e1") been stored, this one would be a duplicate.
	good := []byte(`{"id":"e1","name":"appcues:flow_started","user_id":"u","attributes":{"flowId":"f"}}`)
	if code, body := r.postEvents(t, "/webhooks/appcues/"+acID, destinations.Sign(acSecret, time.Now(), good), good); code != 200 || body["accepted"] != float64(1) {
		t.Errorf("a valid event after the refused ones: %d %v", code, body)
	}
}

// TestGRPCIDFieldsRefuseControlCharacters sets, one at a time, every string
// field of every seghub RPC's request (nested messages, list elements and
// map keys included) to a value holding NUL and expects InvalidArgument
// naming that field: REST covers most RPCs, this covers the rest (streams,
// internal calls) and every field added later.
func TestGRPCIDFieldsRefuseControlCharacters(t *testing.T) {
	const internalKey = "security-ids-internal-key-0123456789"
	r := start(t, t.TempDir(), func(c *config.Config) { c.InternalKey = internalKey })
	adminKey := keyPattern.FindString(r.stdout.String())
	dial := func(creds grpc.DialOption) *grpc.ClientConn {
		c, err := grpc.NewClient(r.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()), creds)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	conns := []*grpc.ClientConn{
		dial(grpc.WithPerRPCCredentials(bearerCreds(adminKey))),
		dial(grpc.WithPerRPCCredentials(auth.InternalCredentials{Key: internalKey, Insecure: true})),
	}
	checked := 0
	for _, m := range seghubRPCs() {
		md, full := m.md, m.full
		for _, field := range stringFieldPaths(md.Input(), "", 0) {
			req := dynamicpb.NewMessage(md.Input())
			setPath(req, field.path, "a\x00b")
			var code codes.Code
			var got []string
			for _, conn := range conns {
				code, got = invokeOnce(conn, md, full, req)
				if code != codes.PermissionDenied {
					break
				}
			}
			checked++
			if code != codes.InvalidArgument || !contains(got, field.want) {
				t.Errorf("%s with NUL in %s: %v %q; want InvalidArgument naming %s", full, field.path, code, got, field.want)
			}
		}
	}
	if checked < 50 {
		t.Fatalf("only %d request fields checked", checked)
	}
	t.Logf("%d request fields of every RPC refused", checked)
}

// stringPath is one settable string position of a request: the dotted path
// through fields (a list or map field gets one element, a map key "k"), and
// the violation field it should be refused under.
type stringPath struct {
	path []protoreflect.FieldDescriptor
	want string
}

func (p stringPath) String() string { return p.want }

func stringFieldPaths(md protoreflect.MessageDescriptor, prefix string, depth int) []stringPath {
	if depth > 4 {
		return nil
	}
	var out []stringPath
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		name := prefix + string(fd.Name())
		switch {
		case fd.IsMap():
			if fd.MapKey().Kind() == protoreflect.StringKind {
				out = append(out, stringPath{[]protoreflect.FieldDescriptor{fd, fd.MapKey()}, name})
			}
			switch fd.MapValue().Kind() {
			case protoreflect.StringKind:
				out = append(out, stringPath{[]protoreflect.FieldDescriptor{fd, fd.MapValue()}, name + `["k"]`})
			case protoreflect.MessageKind:
				for _, sub := range stringFieldPaths(fd.MapValue().Message(), name+`["k"].`, depth+1) {
					out = append(out, stringPath{append([]protoreflect.FieldDescriptor{fd, fd.MapValue()}, sub.path...), sub.want})
				}
			}
		case fd.Kind() == protoreflect.StringKind:
			if fd.IsList() {
				name += "[0]"
			}
			out = append(out, stringPath{[]protoreflect.FieldDescriptor{fd}, name})
		case fd.Kind() == protoreflect.MessageKind:
			if fd.IsList() {
				name += "[0]"
			}
			for _, sub := range stringFieldPaths(fd.Message(), name+".", depth+1) {
				out = append(out, stringPath{append([]protoreflect.FieldDescriptor{fd}, sub.path...), sub.want})
			}
		}
	}
	return out
}

// setPath sets value at p in m: lists get one element, maps the key "k"
// (or value as the key when p ends at the map key).
func setPath(m protoreflect.Message, p []protoreflect.FieldDescriptor, value string) {
	fd := p[0]
	switch {
	case fd.IsMap():
		mp := m.Mutable(fd).Map()
		if p[1] == fd.MapKey() {
			mp.Set(protoreflect.ValueOfString(value).MapKey(), mp.NewValue())
			return
		}
		k := protoreflect.ValueOfString("k").MapKey()
		if fd.MapValue().Kind() == protoreflect.StringKind {
			mp.Set(k, protoreflect.ValueOfString(value))
			return
		}
		v := mp.NewValue()
		setPath(v.Message(), p[2:], value)
		mp.Set(k, v)
	case fd.IsList():
		l := m.Mutable(fd).List()
		if fd.Kind() == protoreflect.StringKind {
			l.Append(protoreflect.ValueOfString(value))
			return
		}
		v := l.NewElement()
		setPath(v.Message(), p[1:], value)
		l.Append(v)
	case fd.Kind() == protoreflect.StringKind:
		m.Set(fd, protoreflect.ValueOfString(value))
	default:
		setPath(m.Mutable(fd).Message(), p[1:], value)
	}
}

// invokeOnce sends req (once, on a stream for streaming RPCs) and returns
// the status code and the fields of its violations.
func invokeOnce(conn *grpc.ClientConn, md protoreflect.MethodDescriptor, full string, req proto.Message) (codes.Code, []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp := dynamicpb.NewMessage(md.Output())
	var err error
	if !md.IsStreamingClient() && !md.IsStreamingServer() {
		err = conn.Invoke(ctx, full, req, resp)
	} else {
		var s grpc.ClientStream
		if s, err = conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: md.IsStreamingClient(), ServerStreams: md.IsStreamingServer()}, full); err == nil {
			_ = s.SendMsg(req)
			_ = s.CloseSend()
			for err == nil {
				err = s.RecvMsg(resp)
			}
		}
	}
	st := status.Convert(err)
	var fields []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
	}
	return st.Code(), fields
}
