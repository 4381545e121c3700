package admin

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"

	adminv1 "github.com/seghub/seghub/gen/seghub/admin/v1"
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
		keys, _ := s.ListKeys(ctx, child.ID, false, 0, "", 100)
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
		if keys, _ := s.ListKeys(ctx, child.ID, false, 0, "", 100); len(keys) != 0 {
			t.Fatalf("revoked key listed: %+v", keys)
		}
		if keys, _ := s.ListKeys(ctx, child.ID, true, 0, "", 100); len(keys) != 1 {
			t.Fatalf("include_revoked: %+v", keys)
		}
	})
}

// ListApiKeys pages oldest first: walking next_page_token returns every key
// of the environment once, revoked ones only when asked for.
func TestListApiKeysPages(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		if err := Migrate(ctx, db); err != nil {
			t.Fatal(err)
		}
		s := NewStore(db)
		env, err := s.CreateEnvironment(ctx, "paged", "")
		if err != nil {
			t.Fatal(err)
		}
		other, _ := s.CreateEnvironment(ctx, "other", "")
		if _, err := s.CreateKey(ctx, other.ID, "not listed", authv1.Role_ROLE_ADMIN, NewSecret()); err != nil {
			t.Fatal(err)
		}
		var want []Key
		for i := range 5 {
			k, err := s.CreateKey(ctx, env.ID, fmt.Sprintf("key %d", i), authv1.Role_ROLE_MEMBER, NewSecret())
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, k)
		}
		if _, _, err := s.RevokeKey(ctx, env.ID, want[2].ID); err != nil {
			t.Fatal(err)
		}
		// Keys created in the same microsecond are ordered by id.
		slices.SortFunc(want, func(a, b Key) int {
			if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
				return c
			}
			return cmp.Compare(a.ID, b.ID)
		})
		srv := NewServer(s, nil)
		actx := auth.WithPrincipal(ctx, auth.Principal{EnvironmentID: env.ID, Role: authv1.Role_ROLE_ADMIN})
		walk := func(includeRevoked bool) []string {
			var got []string
			req := &adminv1.ListApiKeysRequest{PageSize: 2, IncludeRevoked: includeRevoked}
			for pages := 1; ; pages++ {
				resp, err := srv.ListApiKeys(actx, req)
				if err != nil {
					t.Fatal(err)
				}
				if len(resp.GetApiKeys()) > 2 || pages > 3 {
					t.Fatalf("page %d holds %d keys", pages, len(resp.GetApiKeys()))
				}
				for _, k := range resp.GetApiKeys() {
					got = append(got, k.GetId())
				}
				if resp.GetNextPageToken() == "" {
					return got
				}
				req.PageToken = resp.GetNextPageToken()
			}
		}
		var all, live []string
		for _, k := range want {
			all = append(all, k.ID)
			if k.ID != want[2].ID {
				live = append(live, k.ID)
			}
		}
		if got := walk(true); !slices.Equal(got, all) {
			t.Fatalf("pages with revoked = %v, want %v", got, all)
		}
		if got := walk(false); !slices.Equal(got, live) {
			t.Fatalf("pages = %v, want %v", got, live)
		}
		// page_size 0 is one default page, as before pagination.
		if resp, err := srv.ListApiKeys(actx, &adminv1.ListApiKeysRequest{IncludeRevoked: true}); err != nil || len(resp.GetApiKeys()) != 5 || resp.GetNextPageToken() != "" {
			t.Fatalf("default page = %v, %v", resp, err)
		}
		for _, req := range []*adminv1.ListApiKeysRequest{{PageToken: "not-a-token"}, {PageToken: "bm90IGpzb24"}, {PageSize: -1}} {
			if _, err := srv.ListApiKeys(actx, req); apperr.Code(err) != codes.InvalidArgument {
				t.Fatalf("ListApiKeys(%v) = %v, want InvalidArgument", req, err)
			}
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
