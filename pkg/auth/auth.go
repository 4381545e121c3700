// Package auth resolves API keys to a principal (environment + role) and
// enforces the access level each RPC declares in its proto options.
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	authv1 "github.com/seghub/seghub/gen/seghub/auth/v1"
)

// EnvironmentHeader carries the environment an internal caller acts for.
const EnvironmentHeader = "x-seghub-environment"

// Principal is who is calling: an API key of one environment with one role.
type Principal struct {
	EnvironmentID string
	KeyID         string
	Role          authv1.Role
	// Internal is set for seghub's own components calling each other with the
	// cluster's internal key; they act for the environment they name.
	Internal bool
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the caller of the current request.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// MustEnvironment returns the caller's environment id, or "" when the request
// was not authenticated (never the case behind the interceptor).
func MustEnvironment(ctx context.Context) string {
	p, _ := FromContext(ctx)
	return p.EnvironmentID
}

// ErrUnknownKey is returned by a KeyResolver for a key that does not exist or
// was revoked.
var ErrUnknownKey = errors.New("unknown or revoked API key")

// KeyResolver looks a key up by the SHA-256 hash of its secret.
type KeyResolver interface {
	ResolveKeyHash(ctx context.Context, hash string) (Principal, error)
}

// HashSecret is how API key secrets are stored: hex SHA-256. Keys carry 190
// bits of randomness, so a slow hash would add latency without adding safety.
func HashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// KeyCacheTTL is how long a resolved key is trusted without the store. A key
// revoked in one process stops working in every other within this time: the
// expiry counts from before the store was read, so no cached answer is older.
const KeyCacheTTL = time.Second

// Authenticator turns request metadata into a Principal, caching resolved
// keys briefly so hot read paths (targeting lookups) skip the store.
type Authenticator struct {
	resolver    KeyResolver
	internalKey string
	ttl         time.Duration
	now         func() time.Time

	mu    sync.RWMutex
	cache map[string]cached
	// forgets counts Forget calls: a lookup that overlapped one may have read
	// the key before it was revoked, so it answers but does not cache.
	forgets uint64
}

type cached struct {
	p       Principal
	expires time.Time
}

// NewAuthenticator returns an Authenticator. internalKey may be empty to
// disable internal calls.
func NewAuthenticator(resolver KeyResolver, internalKey string) *Authenticator {
	return &Authenticator{resolver: resolver, internalKey: internalKey, ttl: KeyCacheTTL, now: time.Now, cache: map[string]cached{}}
}

// Forget drops a key hash from the cache; called when a key is revoked.
func (a *Authenticator) Forget(hash string) {
	a.mu.Lock()
	delete(a.cache, hash)
	a.forgets++
	a.mu.Unlock()
}

// Authenticate resolves the caller from incoming gRPC metadata.
func (a *Authenticator) Authenticate(ctx context.Context) (Principal, error) {
	// Read single keys: FromIncomingContext copies the whole metadata on
	// every call.
	md := incoming{ctx}
	secret := bearer(md)
	if secret == "" {
		return Principal{}, status.Error(codes.Unauthenticated, "missing API key: send it as 'Authorization: Bearer <key>' (or the x-api-key header)")
	}
	if a.internalKey != "" && subtle.ConstantTimeCompare([]byte(secret), []byte(a.internalKey)) == 1 {
		env := first(md, EnvironmentHeader)
		return Principal{EnvironmentID: env, Role: authv1.Role_ROLE_SERVICE, Internal: true, KeyID: "internal"}, nil
	}
	hash := HashSecret(secret)
	now := a.now()
	a.mu.RLock()
	c, ok := a.cache[hash]
	forgets := a.forgets
	a.mu.RUnlock()
	if ok && now.Before(c.expires) {
		return c.p, nil
	}
	p, err := a.resolver.ResolveKeyHash(ctx, hash)
	if errors.Is(err, ErrUnknownKey) {
		return Principal{}, status.Error(codes.Unauthenticated, "invalid API key: it does not exist or was revoked; create one with AdminService.CreateApiKey")
	}
	if err != nil {
		return Principal{}, status.Error(codes.Unavailable, "could not verify API key, try again")
	}
	a.mu.Lock()
	if a.forgets == forgets {
		if len(a.cache) > 10000 {
			a.cache = map[string]cached{}
		}
		a.cache[hash] = cached{p: p, expires: now.Add(a.ttl)}
	}
	a.mu.Unlock()
	return p, nil
}

// incoming reads the request's metadata key by key.
type incoming struct{ ctx context.Context }

func (m incoming) Get(k string) []string { return metadata.ValueFromIncomingContext(m.ctx, k) }

func bearer(md incoming) string {
	if v := first(md, "authorization"); v != "" {
		if k, ok := strings.CutPrefix(v, "Bearer "); ok {
			return strings.TrimSpace(k)
		}
		if k, ok := strings.CutPrefix(v, "bearer "); ok {
			return strings.TrimSpace(k)
		}
		return ""
	}
	return strings.TrimSpace(first(md, "x-api-key"))
}

func first(md incoming, k string) string {
	if v := md.Get(k); len(v) > 0 {
		return v[0]
	}
	return ""
}

// Allowed reports whether role may call an RPC declared with access.
func Allowed(access authv1.Access, role authv1.Role) bool {
	switch access {
	case authv1.Access_ACCESS_ADMIN:
		return role == authv1.Role_ROLE_ADMIN
	case authv1.Access_ACCESS_MEMBER:
		return role == authv1.Role_ROLE_ADMIN || role == authv1.Role_ROLE_MEMBER
	case authv1.Access_ACCESS_INTERNAL:
		return role == authv1.Role_ROLE_ADMIN || role == authv1.Role_ROLE_SERVICE
	case authv1.Access_ACCESS_ANY:
		// Client keys live in web pages: they pass ACCESS_CLIENT only.
		return role == authv1.Role_ROLE_ADMIN || role == authv1.Role_ROLE_MEMBER || role == authv1.Role_ROLE_SERVICE
	case authv1.Access_ACCESS_CLIENT:
		return role == authv1.Role_ROLE_ADMIN || role == authv1.Role_ROLE_MEMBER || role == authv1.Role_ROLE_SERVICE || role == authv1.Role_ROLE_CLIENT
	}
	return false
}

// Need describes access for error messages.
func Need(access authv1.Access) string {
	switch access {
	case authv1.Access_ACCESS_ADMIN:
		return "an admin key"
	case authv1.Access_ACCESS_MEMBER:
		return "an admin or member key"
	case authv1.Access_ACCESS_INTERNAL:
		return "a service or admin key"
	case authv1.Access_ACCESS_ANY:
		return "an admin, member or service key (client keys only evaluate flags)"
	case authv1.Access_ACCESS_CLIENT:
		return "any valid key (client keys included)"
	case authv1.Access_ACCESS_SYSTEM:
		return "seghub's internal key (it is not callable with an API key)"
	}
	return "no key (this RPC declares no access level)"
}

// methodAccess caches the access option of each full method name.
var methodAccess sync.Map // string -> authv1.Access

// AccessOf returns the access level declared on an RPC (ACCESS_UNSPECIFIED
// when the method is unknown or declares none).
func AccessOf(fullMethod string) authv1.Access {
	if v, ok := methodAccess.Load(fullMethod); ok {
		return v.(authv1.Access)
	}
	name := strings.ReplaceAll(strings.TrimPrefix(fullMethod, "/"), "/", ".")
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
	md, ok := d.(protoreflect.MethodDescriptor)
	if err != nil || !ok {
		// Not cached: callers name methods, and names that exist are few.
		return authv1.Access_ACCESS_UNSPECIFIED
	}
	access := authv1.Access_ACCESS_UNSPECIFIED
	if opts, ok := md.Options().(*descriptorpb.MethodOptions); ok && opts != nil {
		access = proto.GetExtension(opts, authv1.E_Access).(authv1.Access)
	}
	methodAccess.Store(fullMethod, access)
	return access
}

// Public methods need no key: health checks and reflection.
func public(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/grpc.health.v1.Health/") ||
		strings.HasPrefix(fullMethod, "/grpc.reflection.")
}

// Authorize authenticates the call and checks the method's access level.
func (a *Authenticator) Authorize(ctx context.Context, fullMethod string) (context.Context, error) {
	if public(fullMethod) {
		return ctx, nil
	}
	access := AccessOf(fullMethod)
	if access == authv1.Access_ACCESS_UNSPECIFIED {
		return nil, status.Errorf(codes.PermissionDenied, "%s declares no access level and is refused", fullMethod)
	}
	p, err := a.Authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if p.Internal && p.EnvironmentID == "" && access != authv1.Access_ACCESS_INTERNAL && access != authv1.Access_ACCESS_SYSTEM {
		return nil, status.Errorf(codes.InvalidArgument, "internal calls to %s must name an environment in the %s header", fullMethod, EnvironmentHeader)
	}
	// seghub's own components are trusted with every RPC of the environment
	// they name.
	if !p.Internal && !Allowed(access, p.Role) {
		return nil, status.Errorf(codes.PermissionDenied, "%s needs %s; this key has role %s", fullMethod, Need(access), RoleName(p.Role))
	}
	return WithPrincipal(ctx, p), nil
}

// RoleName is the lower-case role name used in APIs and messages.
func RoleName(r authv1.Role) string {
	switch r {
	case authv1.Role_ROLE_ADMIN:
		return "admin"
	case authv1.Role_ROLE_MEMBER:
		return "member"
	case authv1.Role_ROLE_SERVICE:
		return "service"
	case authv1.Role_ROLE_CLIENT:
		return "client"
	}
	return "unspecified"
}

// ParseRole is the inverse of RoleName.
func ParseRole(s string) authv1.Role {
	switch s {
	case "admin":
		return authv1.Role_ROLE_ADMIN
	case "member":
		return authv1.Role_ROLE_MEMBER
	case "service":
		return authv1.Role_ROLE_SERVICE
	case "client":
		return authv1.Role_ROLE_CLIENT
	}
	return authv1.Role_ROLE_UNSPECIFIED
}

// UnaryServerInterceptor enforces Authorize on unary RPCs.
func (a *Authenticator) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := a.Authorize(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor enforces Authorize on streaming RPCs.
func (a *Authenticator) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := a.Authorize(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		return handler(srv, &wrappedStream{ServerStream: ss, ctx: ctx})
	}
}

type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w *wrappedStream) Context() context.Context { return w.ctx }

// InternalCredentials authenticate seghub's components to each other. The
// environment is taken from the principal in the call's context, so a service
// calling another on behalf of a request keeps that request's environment.
type InternalCredentials struct {
	Key string
	// Insecure allows sending the key over plaintext (loopback, in-cluster).
	Insecure bool
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (c InternalCredentials) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	md := map[string]string{"authorization": "Bearer " + c.Key}
	if env := EnvironmentFor(ctx); env != "" {
		md[EnvironmentHeader] = env
	}
	return md, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (c InternalCredentials) RequireTransportSecurity() bool { return !c.Insecure }

type envKey struct{}

// ForEnvironment marks ctx as acting for env on outgoing internal calls; used
// by background work (sync runs, event consumers) that has no request.
func ForEnvironment(ctx context.Context, env string) context.Context {
	return context.WithValue(ctx, envKey{}, env)
}

// EnvironmentFor returns the environment outgoing internal calls act for.
func EnvironmentFor(ctx context.Context) string {
	if env, ok := ctx.Value(envKey{}).(string); ok && env != "" {
		return env
	}
	return MustEnvironment(ctx)
}
