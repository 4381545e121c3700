package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	authv1 "github.com/seghub/seghub/gen/seghub/auth/v1"
	"github.com/seghub/seghub/pkg/auth"
)

type bearerCreds string

func (b bearerCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	if b == "" {
		return nil, nil
	}
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearerCreds) RequireTransportSecurity() bool { return false }

func createKey(t *testing.T, r *running, adminKey, role string) string {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+r.httpAddr+"/v1/api-keys", strings.NewReader(`{"name":"`+role+`","role":"ROLE_`+strings.ToUpper(role)+`"}`))
	req.Header.Set("Authorization", "Bearer "+adminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Secret string }
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &out); err != nil || out.Secret == "" {
		t.Fatalf("create %s key: %s", role, b)
	}
	return out.Secret
}

// TestRoleMatrix calls every seghub RPC with no key and with a key of each
// role and checks the answer against the access level the RPC declares: a
// refused role gets PermissionDenied, no key Unauthenticated, an allowed
// role gets past authorization (whatever the empty request then earns).
func TestRoleMatrix(t *testing.T) {
	r := start(t, t.TempDir(), nil)
	adminKey := keyPattern.FindString(r.stdout.String())
	keys := map[authv1.Role]string{
		authv1.Role_ROLE_ADMIN:   adminKey,
		authv1.Role_ROLE_MEMBER:  createKey(t, r, adminKey, "member"),
		authv1.Role_ROLE_SERVICE: createKey(t, r, adminKey, "service"),
		// Browser-safe: only ACCESS_CLIENT RPCs (OFREP's EvaluateUser) let it in.
		authv1.Role_ROLE_CLIENT: createKey(t, r, adminKey, "client"),
	}
	conns := map[authv1.Role]*grpc.ClientConn{}
	for role, key := range keys {
		c, err := grpc.NewClient(r.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(bearerCreds(key)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[role] = c
	}
	anon, _ := grpc.NewClient(r.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer anon.Close()

	methods := 0
	for _, m := range seghubRPCs() {
		md, full := m.md, m.full
		access := auth.AccessOf(full)
		if access == authv1.Access_ACCESS_UNSPECIFIED {
			t.Errorf("%s declares no access level", full)
			continue
		}
		methods++
		if code := call(anon, md, full); code != codes.Unauthenticated {
			t.Errorf("%s without a key: %v, want Unauthenticated", full, code)
		}
		for role, conn := range conns {
			code := call(conn, md, full)
			denied := code == codes.PermissionDenied || code == codes.Unauthenticated
			if want := !auth.Allowed(access, role); denied != want {
				t.Errorf("%s with a %s key: %v (access %v)", full, auth.RoleName(role), code, access)
			}
		}
	}
	if methods < 6 {
		t.Fatalf("only %d RPCs found", methods)
	}
	// The client key's whole reach, spelled out: a new ACCESS_CLIENT RPC
	// must be added here on purpose.
	var clientRPCs []string
	for _, m := range seghubRPCs() {
		if auth.Allowed(auth.AccessOf(m.full), authv1.Role_ROLE_CLIENT) {
			clientRPCs = append(clientRPCs, m.full)
		}
	}
	if want := []string{"/seghub.targeting.v1.TargetingService/EvaluateUser"}; !slices.Equal(clientRPCs, want) {
		t.Errorf("a client key may call %v, want only %v", clientRPCs, want)
	}
}

// call invokes one RPC with an empty request and returns the status code.
func call(conn *grpc.ClientConn, md protoreflect.MethodDescriptor, full string) codes.Code {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req := dynamicpb.NewMessage(md.Input())
	resp := dynamicpb.NewMessage(md.Output())
	if !md.IsStreamingClient() && !md.IsStreamingServer() {
		return status.Code(conn.Invoke(ctx, full, req, resp))
	}
	s, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: md.IsStreamingClient(), ServerStreams: md.IsStreamingServer()}, full)
	if err != nil {
		return status.Code(err)
	}
	if err := s.SendMsg(proto.Message(req)); err != nil && err != io.EOF {
		return status.Code(err)
	}
	_ = s.CloseSend()
	err = s.RecvMsg(resp)
	if err == nil {
		return codes.OK // a stream that answers was let in
	}
	return status.Code(err)
}
