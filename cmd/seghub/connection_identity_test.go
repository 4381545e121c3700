package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
)

// A connection's identity property is checked as EnableSync checks a
// sync's, over REST and gRPC alike: one no user holds is 400 /
// InvalidArgument on settings.identity_property listing close matches, on
// create and on update; a held one, user_id and the type's own pass.
func TestConnectionIdentityPropertyOverRESTAndGRPC(t *testing.T) {
	r := start(t, t.TempDir(), nil)
	root := keyPattern.FindString(r.stdout.String())
	r.ok(t, "POST", "/v1/users:upsert", root, `{"users":[{"user_id":"u1","properties":{"email":{"string_value":"u1@example.com"}}}]}`)
	hook := func(name, prop string) string {
		return `{"type":"webhook","name":"` + name + `","credentials":{"url":"http://127.0.0.1:9/hook"},"settings":{"identity_property":"` + prop + `"}}`
	}
	refused := func(what string, code int, out map[string]any, raw []byte) {
		t.Helper()
		msg, _ := out["message"].(string)
		fields := restViolations(raw)
		if code != 400 || len(fields) != 1 || fields[0] != "settings.identity_property" || !strings.Contains(msg, `no user holds property "emial"`) || !strings.Contains(msg, `did you mean "email"?`) {
			t.Fatalf("%s: %d %v; want 400 on settings.identity_property suggesting \"email\"", what, code, out)
		}
	}
	code, raw := r.exchange(t, "POST", "/v1/connections", root, hook("typo", "emial"))
	refused("REST create on a typo", code, decode(t, raw), raw)
	if _, out := r.do(t, "GET", "/v1/connections", root, ""); out["connections"] != nil && len(out["connections"].([]any)) != 0 {
		t.Fatalf("a refused create stored a connection: %v", out)
	}
	id := field(r.ok(t, "POST", "/v1/connections", root, hook("by email", "email")), "connection", "connection_id")
	code, raw = r.exchange(t, "PATCH", "/v1/connections/"+id, root, `{"settings":{"identity_property":"emial"}}`)
	refused("REST update to a typo", code, decode(t, raw), raw)
	r.ok(t, "PATCH", "/v1/connections/"+id, root, `{"settings":{"identity_property":"user_id"}}`)

	conn, err := grpc.NewClient(r.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(bearerCreds(root)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cl := connectorv1.NewConnectorServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	onField := func(what string, err error) {
		t.Helper()
		var got []string
		for _, d := range status.Convert(err).Details() {
			if br, ok := d.(*errdetails.BadRequest); ok {
				for _, v := range br.GetFieldViolations() {
					got = append(got, v.GetField()+": "+v.GetDescription())
				}
			}
		}
		if status.Code(err) != codes.InvalidArgument || len(got) != 1 || !strings.HasPrefix(got[0], "settings.identity_property: ") || !strings.Contains(got[0], `did you mean "email"?`) {
			t.Fatalf("%s: %v; want InvalidArgument on settings.identity_property suggesting \"email\"", what, err)
		}
	}
	settings := &connectorv1.ConnectionSettings{IdentityProperty: "Email"}
	_, err = cl.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "webhook", Name: "grpc", Credentials: map[string]string{"url": "http://127.0.0.1:9/hook"}, Settings: settings})
	onField("gRPC create on a wrong case", err)
	_, err = cl.UpdateConnection(ctx, &connectorv1.UpdateConnectionRequest{ConnectionId: id, Settings: settings})
	onField("gRPC update to a wrong case", err)
	settings.IdentityProperty = "email"
	if _, err := cl.UpdateConnection(ctx, &connectorv1.UpdateConnectionRequest{ConnectionId: id, Settings: settings}); err != nil {
		t.Fatalf("gRPC update to a held property: %v", err)
	}
}

func decode(t *testing.T, raw []byte) map[string]any {
	t.Helper()
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("not JSON: %s", raw)
	}
	return out
}
