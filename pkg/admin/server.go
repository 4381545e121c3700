package admin

import (
	"context"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/seghub/seghub/gen/seghub/admin/v1"
	authv1 "github.com/seghub/seghub/gen/seghub/auth/v1"
	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/pkg/auth"
	"github.com/seghub/seghub/pkg/paging"
)

// MaxNameLength bounds environment and key names.
const MaxNameLength = 100

// Server implements AdminService.
type Server struct {
	adminv1.UnimplementedAdminServiceServer
	store *Store
	// onRevoke lets the authenticator forget a revoked key at once.
	onRevoke func(hash string)
}

// NewServer returns the AdminService; onRevoke may be nil.
func NewServer(s *Store, onRevoke func(hash string)) *Server {
	if onRevoke == nil {
		onRevoke = func(string) {}
	}
	return &Server{store: s, onRevoke: onRevoke}
}

func checkName(field, name string) (string, error) { return apperr.Name(field, name, MaxNameLength) }

func envPB(e Environment) *adminv1.Environment {
	return &adminv1.Environment{Id: e.ID, Name: e.Name, ParentId: e.ParentID, CreateTime: timestamppb.New(e.CreatedAt)}
}

func keyPB(k Key) *adminv1.ApiKey {
	pb := &adminv1.ApiKey{Id: k.ID, EnvironmentId: k.EnvironmentID, Name: k.Name, Role: k.Role, Prefix: k.Prefix, CreateTime: timestamppb.New(k.CreatedAt)}
	if k.RevokedAt != nil {
		pb.RevokeTime = timestamppb.New(*k.RevokedAt)
	}
	return pb
}

// CreateEnvironment implements AdminService.
func (s *Server) CreateEnvironment(ctx context.Context, req *adminv1.CreateEnvironmentRequest) (*adminv1.CreateEnvironmentResponse, error) {
	name, err := checkName("name", req.GetName())
	if err != nil {
		return nil, err
	}
	env, err := s.store.CreateEnvironment(ctx, name, auth.MustEnvironment(ctx))
	if err != nil {
		return nil, err
	}
	secret := NewSecret()
	k, err := s.store.CreateKey(ctx, env.ID, "first admin", authv1.Role_ROLE_ADMIN, secret)
	if err != nil {
		return nil, err
	}
	return &adminv1.CreateEnvironmentResponse{Environment: envPB(env), AdminKey: keyPB(k), AdminSecret: secret}, nil
}

// ListEnvironments implements AdminService.
func (s *Server) ListEnvironments(ctx context.Context, _ *adminv1.ListEnvironmentsRequest) (*adminv1.ListEnvironmentsResponse, error) {
	envs, err := s.store.ListEnvironments(ctx, auth.MustEnvironment(ctx))
	if err != nil {
		return nil, err
	}
	resp := &adminv1.ListEnvironmentsResponse{}
	for _, e := range envs {
		resp.Environments = append(resp.Environments, envPB(e))
	}
	return resp, nil
}

// CreateApiKey implements AdminService.
func (s *Server) CreateApiKey(ctx context.Context, req *adminv1.CreateApiKeyRequest) (*adminv1.CreateApiKeyResponse, error) {
	name, err := checkName("name", req.GetName())
	if err != nil {
		return nil, err
	}
	if auth.RoleName(req.GetRole()) == "unspecified" {
		return nil, apperr.Invalid("role", "must be ROLE_ADMIN, ROLE_MEMBER, ROLE_SERVICE or ROLE_CLIENT")
	}
	secret := NewSecret()
	k, err := s.store.CreateKey(ctx, auth.MustEnvironment(ctx), name, req.GetRole(), secret)
	if err != nil {
		return nil, err
	}
	return &adminv1.CreateApiKeyResponse{ApiKey: keyPB(k), Secret: secret}, nil
}

// keyCursor is ListApiKeys' page token: the last key returned, in
// (created_at, id) order; Created is in microseconds, as stored.
type keyCursor struct {
	Created int64  `json:"c"`
	ID      string `json:"i"`
}

// ListApiKeys implements AdminService.
func (s *Server) ListApiKeys(ctx context.Context, req *adminv1.ListApiKeysRequest) (*adminv1.ListApiKeysResponse, error) {
	var cur keyCursor
	size, err := paging.Parse(req.GetPageSize(), req.GetPageToken(), &cur)
	if err != nil {
		return nil, err
	}
	keys, err := s.store.ListKeys(ctx, auth.MustEnvironment(ctx), req.GetIncludeRevoked(), cur.Created, cur.ID, size+1)
	if err != nil {
		return nil, err
	}
	resp := &adminv1.ListApiKeysResponse{}
	if len(keys) > size {
		keys = keys[:size]
		last := keys[size-1]
		resp.NextPageToken = paging.Encode(keyCursor{Created: last.CreatedAt.UnixMicro(), ID: last.ID})
	}
	for _, k := range keys {
		resp.ApiKeys = append(resp.ApiKeys, keyPB(k))
	}
	return resp, nil
}

// RevokeApiKey implements AdminService.
func (s *Server) RevokeApiKey(ctx context.Context, req *adminv1.RevokeApiKeyRequest) (*adminv1.RevokeApiKeyResponse, error) {
	if strings.TrimSpace(req.GetId()) == "" {
		return nil, apperr.Invalid("id", "must name the key to revoke")
	}
	k, hash, err := s.store.RevokeKey(ctx, auth.MustEnvironment(ctx), req.GetId())
	if err != nil {
		return nil, err
	}
	s.onRevoke(hash)
	return &adminv1.RevokeApiKeyResponse{ApiKey: keyPB(k)}, nil
}

// WhoAmI implements AdminService.
func (s *Server) WhoAmI(ctx context.Context, _ *adminv1.WhoAmIRequest) (*adminv1.WhoAmIResponse, error) {
	p, _ := auth.FromContext(ctx)
	return &adminv1.WhoAmIResponse{EnvironmentId: p.EnvironmentID, ApiKeyId: p.KeyID, Role: p.Role}, nil
}
