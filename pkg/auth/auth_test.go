package auth

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	_ "github.com/seghub/seghub/gen/seghub/admin/v1" // registers the RPCs' access options
	authv1 "github.com/seghub/seghub/gen/seghub/auth/v1"
)

func TestAllowed(t *testing.T) {
	t.Parallel()
	admin, member, service, client := authv1.Role_ROLE_ADMIN, authv1.Role_ROLE_MEMBER, authv1.Role_ROLE_SERVICE, authv1.Role_ROLE_CLIENT
	cases := []struct {
		access authv1.Access
		role   authv1.Role
		want   bool
	}{
		{authv1.Access_ACCESS_ADMIN, admin, true},
		{authv1.Access_ACCESS_ADMIN, member, false},
		{authv1.Access_ACCESS_ADMIN, service, false},
		{authv1.Access_ACCESS_MEMBER, admin, true},
		{authv1.Access_ACCESS_MEMBER, member, true},
		{authv1.Access_ACCESS_MEMBER, service, false},
		{authv1.Access_ACCESS_INTERNAL, admin, true},
		{authv1.Access_ACCESS_INTERNAL, member, false},
		{authv1.Access_ACCESS_INTERNAL, service, true},
		{authv1.Access_ACCESS_ANY, member, true},
		{authv1.Access_ACCESS_ANY, service, true},
		{authv1.Access_ACCESS_ANY, authv1.Role_ROLE_UNSPECIFIED, false},
		{authv1.Access_ACCESS_UNSPECIFIED, admin, false},
		{authv1.Access_ACCESS_SYSTEM, admin, false},
		{authv1.Access_ACCESS_SYSTEM, service, false},
		// A client key (browser-safe) passes ACCESS_CLIENT and nothing else.
		{authv1.Access_ACCESS_CLIENT, client, true},
		{authv1.Access_ACCESS_CLIENT, member, true},
		{authv1.Access_ACCESS_CLIENT, admin, true},
		{authv1.Access_ACCESS_CLIENT, service, true},
		{authv1.Access_ACCESS_CLIENT, authv1.Role_ROLE_UNSPECIFIED, false},
		{authv1.Access_ACCESS_ANY, client, false},
		{authv1.Access_ACCESS_MEMBER, client, false},
		{authv1.Access_ACCESS_ADMIN, client, false},
		{authv1.Access_ACCESS_INTERNAL, client, false},
		{authv1.Access_ACCESS_SYSTEM, client, false},
	}
	for _, r := range []authv1.Role{admin, member, service, client} {
		if ParseRole(RoleName(r)) != r {
			t.Errorf("role %v does not round-trip through its name %q", r, RoleName(r))
		}
	}
	for _, c := range cases {
		if got := Allowed(c.access, c.role); got != c.want {
			t.Errorf("Allowed(%v, %v) = %v, want %v", c.access, c.role, got, c.want)
		}
	}
}

type mapResolver map[string]Principal

func (m mapResolver) ResolveKeyHash(_ context.Context, hash string) (Principal, error) {
	if p, ok := m[hash]; ok {
		return p, nil
	}
	return Principal{}, ErrUnknownKey
}

func TestAuthorize(t *testing.T) {
	t.Parallel()
	res := mapResolver{
		HashSecret("admin-key-0123456789"):  {EnvironmentID: "env_a", KeyID: "k1", Role: authv1.Role_ROLE_ADMIN},
		HashSecret("member-key-0123456789"): {EnvironmentID: "env_a", KeyID: "k2", Role: authv1.Role_ROLE_MEMBER},
	}
	a := NewAuthenticator(res, "internal-secret-0123456789")
	const adminRPC = "/seghub.admin.v1.AdminService/CreateApiKey"
	const anyRPC = "/seghub.admin.v1.AdminService/WhoAmI"
	cases := []struct {
		name   string
		method string
		md     metadata.MD
		code   codes.Code
		env    string
	}{
		{"no key", adminRPC, metadata.MD{}, codes.Unauthenticated, ""},
		{"unknown key", adminRPC, metadata.Pairs("authorization", "Bearer nope-nope-nope"), codes.Unauthenticated, ""},
		{"admin key", adminRPC, metadata.Pairs("authorization", "Bearer admin-key-0123456789"), codes.OK, "env_a"},
		{"x-api-key header", adminRPC, metadata.Pairs("x-api-key", "admin-key-0123456789"), codes.OK, "env_a"},
		{"member on admin rpc", adminRPC, metadata.Pairs("authorization", "Bearer member-key-0123456789"), codes.PermissionDenied, ""},
		{"member on any rpc", anyRPC, metadata.Pairs("authorization", "Bearer member-key-0123456789"), codes.OK, "env_a"},
		{"internal key names environment", adminRPC, metadata.Pairs("authorization", "Bearer internal-secret-0123456789", EnvironmentHeader, "env_b"), codes.OK, "env_b"},
		{"internal key without environment", adminRPC, metadata.Pairs("authorization", "Bearer internal-secret-0123456789"), codes.InvalidArgument, ""},
		{"environment header ignored for api keys", anyRPC, metadata.Pairs("authorization", "Bearer member-key-0123456789", EnvironmentHeader, "env_b"), codes.OK, "env_a"},
		{"undeclared method refused", "/seghub.admin.v1.AdminService/Nope", metadata.Pairs("authorization", "Bearer admin-key-0123456789"), codes.PermissionDenied, ""},
		{"health is public", "/grpc.health.v1.Health/Check", metadata.MD{}, codes.OK, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := metadata.NewIncomingContext(context.Background(), c.md)
			out, err := a.Authorize(ctx, c.method)
			if got := status.Code(err); got != c.code {
				t.Fatalf("code = %v (%v), want %v", got, err, c.code)
			}
			if err != nil {
				if status.Convert(err).Message() == "" {
					t.Fatal("error without message")
				}
				return
			}
			if got := MustEnvironment(out); got != c.env {
				t.Fatalf("environment = %q, want %q", got, c.env)
			}
		})
	}
}

func TestForgetDropsCachedKey(t *testing.T) {
	t.Parallel()
	res := mapResolver{HashSecret("admin-key-0123456789"): {EnvironmentID: "env_a", Role: authv1.Role_ROLE_ADMIN}}
	a := NewAuthenticator(res, "")
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer admin-key-0123456789"))
	if _, err := a.Authenticate(ctx); err != nil {
		t.Fatal(err)
	}
	delete(res, HashSecret("admin-key-0123456789")) // revoked in the store
	a.Forget(HashSecret("admin-key-0123456789"))
	if _, err := a.Authenticate(ctx); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("revoked key still accepted: %v", err)
	}
}

// blockingResolver answers like mapResolver, but the first lookup waits until
// released, so a revocation can land while it is in flight.
type blockingResolver struct {
	mapResolver
	started, release chan struct{}
	once             sync.Once
}

func (b *blockingResolver) ResolveKeyHash(ctx context.Context, hash string) (Principal, error) {
	p, err := b.mapResolver.ResolveKeyHash(ctx, hash)
	b.once.Do(func() { close(b.started); <-b.release })
	return p, err
}

func TestRevokedDuringLookupIsNotCached(t *testing.T) {
	t.Parallel()
	hash := HashSecret("admin-key-0123456789")
	res := &blockingResolver{mapResolver: mapResolver{hash: {EnvironmentID: "env_a", Role: authv1.Role_ROLE_ADMIN}}, started: make(chan struct{}), release: make(chan struct{})}
	a := NewAuthenticator(res, "")
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer admin-key-0123456789"))
	done := make(chan error)
	go func() { _, err := a.Authenticate(ctx); done <- err }()
	<-res.started // the lookup has read the key as valid
	delete(res.mapResolver, hash)
	a.Forget(hash)
	close(res.release)
	if err := <-done; err != nil {
		t.Fatalf("the in-flight lookup read a valid key: %v", err)
	}
	if _, err := a.Authenticate(ctx); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("a lookup that overlapped the revocation re-cached the key: %v", err)
	}
}

// Another process caches the key and learns of the revocation only from the
// store: it refuses the key at most KeyCacheTTL after the revocation.
func TestRevocationReachesOtherProcessesWithinOneSecond(t *testing.T) {
	t.Parallel()
	hash := HashSecret("admin-key-0123456789")
	res := mapResolver{hash: {EnvironmentID: "env_a", Role: authv1.Role_ROLE_ADMIN}}
	clock := time.Unix(1_800_000_000, 0)
	other := NewAuthenticator(res, "")
	other.now = func() time.Time { return clock }
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer admin-key-0123456789"))
	if _, err := other.Authenticate(ctx); err != nil {
		t.Fatal(err)
	}
	delete(res, hash) // revoked by another process, at the same instant
	clock = clock.Add(999 * time.Millisecond)
	if _, err := other.Authenticate(ctx); err != nil {
		t.Fatalf("within the cache time the key is still served from the cache: %v", err)
	}
	clock = clock.Add(time.Millisecond)
	if _, err := other.Authenticate(ctx); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("revoked key accepted %v after revocation: %v", time.Second, err)
	}
	if KeyCacheTTL > time.Second {
		t.Fatalf("KeyCacheTTL = %v: revocation must take effect everywhere within one second", KeyCacheTTL)
	}
}
