package admin

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"

	authv1 "github.com/seghub/seghub/gen/seghub/auth/v1"
	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/pkg/auth"
	"github.com/seghub/seghub/pkg/store"
	"github.com/seghub/seghub/pkg/store/storetest"
)

func TestStore(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		if err := Migrate(ctx, db); err != nil {
			t.Fatal(err)
		}
		s := NewStore(db)

		env, secret, err := s.Bootstrap(ctx, "")
		if err != nil || secret == "" || env.Name != "default" {
			t.Fatalf("bootstrap = %+v, %q, %v", env, secret, err)
		}
		if _, again, err := s.Bootstrap(ctx, "sghk_another_key_1234567"); err != nil || again != "" {
			t.Fatalf("second bootstrap created a key: %q, %v", again, err)
		}
		p, err := s.ResolveKeyHash(ctx, auth.HashSecret(secret))
		if err != nil || p.EnvironmentID != env.ID || p.Role != authv1.Role_ROLE_ADMIN {
			t.Fatalf("resolve bootstrap key = %+v, %v", p, err)
		}

		// Only the hash is stored.
		var n int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM api_keys WHERE hash = ? OR prefix = ?`, secret, secret).Scan(&n); err != nil || n != 0 {
			t.Fatalf("secret stored in clear: %d, %v", n, err)
		}

		child, err := s.CreateEnvironment(ctx, "staging", env.ID)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateEnvironment(ctx, "staging", env.ID); apperr.Code(err) != codes.AlreadyExists {
			t.Fatalf("duplicate environment: %v", err)
		}
		other, _ := s.CreateEnvironment(ctx, "unrelated", "")
		envs, err := s.ListEnvironments(ctx, env.ID)
		if err != nil || len(envs) != 2 || envs[1].ID != child.ID {
			t.Fatalf("list = %+v, %v", envs, err)
		}
		if envs, _ := s.ListEnvironments(ctx, other.ID); len(envs) != 1 {
			t.Fatalf("unrelated environment sees %d environments", len(envs))
		}

		memberSecret := NewSecret()
		k, err := s.CreateKey(ctx, child.ID, "frontend", authv1.Role_ROLE_MEMBER, memberSecret)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.RevokeKey(ctx, env.ID, k.ID); apperr.Code(err) != codes.NotFound {
			t.Fatalf("revoked another environment's key: %v", err)
		}
		keys, _ := s.ListKeys(ctx, child.ID, false)
		if len(keys) != 1 || keys[0].Role != authv1.Role_ROLE_MEMBER || keys[0].Prefix != memberSecret[:12] {
			t.Fatalf("keys = %+v", keys)
		}
		rk, hash, err := s.RevokeKey(ctx, child.ID, k.ID)
		if err != nil || rk.RevokedAt == nil || hash != auth.HashSecret(memberSecret) {
			t.Fatalf("revoke = %+v, %v", rk, err)
		}
		if _, err := s.ResolveKeyHash(ctx, hash); err != auth.ErrUnknownKey {
			t.Fatalf("revoked key resolves: %v", err)
		}
		if keys, _ := s.ListKeys(ctx, child.ID, false); len(keys) != 0 {
			t.Fatalf("revoked key listed: %+v", keys)
		}
		if keys, _ := s.ListKeys(ctx, child.ID, true); len(keys) != 1 {
			t.Fatalf("include_revoked: %+v", keys)
		}
	})
}

func TestBootstrapWithGivenKey(t *testing.T) {
	db := storetest.SQLite(t)
	ctx := context.Background()
	if err := Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	s := NewStore(db)
	if _, _, err := s.Bootstrap(ctx, "short"); err == nil {
		t.Fatal("short admin key accepted")
	}
	_, secret, err := s.Bootstrap(ctx, "sghk_chosen_by_operator_123")
	if err != nil || secret != "sghk_chosen_by_operator_123" {
		t.Fatalf("bootstrap = %q, %v", secret, err)
	}
	if _, err := s.ResolveKeyHash(ctx, auth.HashSecret(secret)); err != nil {
		t.Fatal(err)
	}
}
