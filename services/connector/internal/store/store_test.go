package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/pkg/secretbox"
	pkgstore "github.com/seghub/seghub/pkg/store"
	"github.com/seghub/seghub/pkg/store/storetest"
)

func backends() map[string]func(testing.TB) *pkgstore.DB {
	return map[string]func(testing.TB) *pkgstore.DB{"sqlite": storetest.SQLite, "postgres": storetest.Postgres}
}

func open(t *testing.T, db *pkgstore.DB) *Store {
	t.Helper()
	box, err := secretbox.New(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	st, err := Open(context.Background(), db, box)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// Writers racing on one connection — a key rotation, token refreshes, status
// reports, settings changes and a refusal of old credentials — never put
// back credentials older than the newest written: every credential write
// that succeeds owns one version, and the stored credentials are those of
// the last version.
func TestCredentialWritesNeverLoseNewerCredentials(t *testing.T) {
	for name, db := range backends() {
		t.Run(name, func(t *testing.T) {
			st := open(t, db(t))
			ctx := context.Background()
			c := &Connection{ID: "conn_race", Env: "env_a", Type: "appcues", Name: "Appcues", Account: "acct", Status: StatusConnected,
				IdentityProperty: "appcuesUserID", Credentials: map[string]string{"api_key": "initial"}}
			if err := st.Create(ctx, c); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			written := map[int64]string{1: "initial"} // version → credentials written at it
			record := func(c *Connection) {
				mu.Lock()
				defer mu.Unlock()
				if prev, ok := written[c.CredentialsVersion]; ok {
					t.Errorf("version %d written twice: %q then %q", c.CredentialsVersion, prev, c.Credentials["api_key"])
				}
				written[c.CredentialsVersion] = c.Credentials["api_key"]
			}
			read := func() *Connection {
				c, err := st.Get(ctx, "env_a", "conn_race", true)
				if err != nil {
					t.Error(err)
					return nil
				}
				return c
			}
			iterations := 40
			if testing.Short() {
				iterations = 10
			}
			for i := range iterations {
				stale := read()
				var wg sync.WaitGroup
				// A key rotation retries on a lost race after reading again.
				wg.Go(func() {
					for {
						c := read()
						if c == nil {
							return
						}
						c.Credentials = map[string]string{"api_key": fmt.Sprintf("rotated-%d", i)}
						err := st.UpdateCredentials(ctx, c, CredentialWrite{Reconnect: true})
						if errors.Is(err, ErrCredentialsChanged) {
							continue
						}
						if err != nil {
							t.Error(err)
							return
						}
						record(c)
						return
					}
				})
				// Refreshers give up when they lose: the newer credentials win.
				for j := range 2 {
					wg.Go(func() {
						c := read()
						if c == nil {
							return
						}
						c.Credentials = map[string]string{"api_key": fmt.Sprintf("refreshed-%d-%d", i, j)}
						switch err := st.UpdateCredentials(ctx, c, CredentialWrite{}); {
						case err == nil:
							record(c)
						case !errors.Is(err, ErrCredentialsChanged):
							t.Error(err)
						}
					})
				}
				wg.Go(func() {
					for _, s := range []string{StatusNeedsReauth, StatusError, StatusConnected} {
						if err := st.SetStatus(ctx, "env_a", "conn_race", s, "401 from Appcues"); err != nil {
							t.Error(err)
						}
					}
				})
				wg.Go(func() {
					if c := read(); c != nil {
						c.IdentityProperty = fmt.Sprintf("prop-%d", i)
						if err := st.UpdateSettings(ctx, c, Fields{Settings: true}); err != nil {
							t.Error(err)
						}
					}
				})
				wg.Wait()
				// A refusal of credentials that were replaced says nothing
				// about the new ones.
				if marked, err := st.MarkNeedsReauth(ctx, stale, "refresh refused"); err != nil || marked {
					t.Fatalf("iteration %d: stale refusal marked = %v, %v", i, marked, err)
				}
				got := read()
				if got == nil {
					t.FailNow()
				}
				mu.Lock()
				var newest int64
				for v := range written {
					newest = max(newest, v)
				}
				want := written[got.CredentialsVersion]
				mu.Unlock()
				if got.CredentialsVersion != newest || got.Credentials["api_key"] != want {
					t.Fatalf("iteration %d: stored %q at version %d; newest written is version %d (%q)", i, got.Credentials["api_key"], got.CredentialsVersion, newest, written[newest])
				}
				if got.IdentityProperty != fmt.Sprintf("prop-%d", i) {
					t.Fatalf("iteration %d: the settings change was lost: %q", i, got.IdentityProperty)
				}
			}
		})
	}
}

// A credential write from a stale read is refused with Aborted and changes
// nothing; status and settings writes leave credentials alone.
func TestStaleCredentialWriteIsRefused(t *testing.T) {
	for name, db := range backends() {
		t.Run(name, func(t *testing.T) {
			st := open(t, db(t))
			ctx := context.Background()
			c := &Connection{ID: "conn_1", Env: "env_a", Type: "commandbar", Name: "CommandBar", Account: "org-1", Status: StatusConnected, Credentials: map[string]string{"access_token": "at-1"}}
			if err := st.Create(ctx, c); err != nil {
				t.Fatal(err)
			}
			stale, _ := st.Get(ctx, "env_a", "conn_1", true)
			fresh, _ := st.Get(ctx, "env_a", "conn_1", true)
			fresh.Credentials = map[string]string{"access_token": "at-2"}
			if err := st.UpdateCredentials(ctx, fresh, CredentialWrite{}); err != nil {
				t.Fatal(err)
			}
			if err := st.SetStatus(ctx, "env_a", "conn_1", StatusNeedsReauth, "401"); err != nil {
				t.Fatal(err)
			}
			stale.Credentials = map[string]string{"access_token": "at-old"}
			err := st.UpdateCredentials(ctx, stale, CredentialWrite{Reconnect: true})
			if !errors.Is(err, ErrCredentialsChanged) || apperr.Code(err) != codes.Aborted {
				t.Fatalf("stale write = %v, want Aborted", err)
			}
			got, _ := st.Get(ctx, "env_a", "conn_1", true)
			if got.Credentials["access_token"] != "at-2" || got.CredentialsVersion != 2 || got.Status != StatusNeedsReauth {
				t.Fatalf("after a stale write: %v v%d %s", got.Credentials, got.CredentialsVersion, got.Status)
			}
			// A granted refresh lifts needs_reauth, and only that status.
			got.Credentials = map[string]string{"access_token": "at-3"}
			if err := st.UpdateCredentials(ctx, got, CredentialWrite{LiftReauth: true}); err != nil {
				t.Fatal(err)
			}
			if got, _ = st.Get(ctx, "env_a", "conn_1", true); got.Status != StatusConnected || got.LastError != "" || got.Credentials["access_token"] != "at-3" {
				t.Fatalf("after a granted refresh: %s %q %v", got.Status, got.LastError, got.Credentials)
			}
			if err := st.SetStatus(ctx, "env_a", "conn_1", StatusError, "503"); err != nil {
				t.Fatal(err)
			}
			if err := st.UpdateCredentials(ctx, got, CredentialWrite{LiftReauth: true}); err != nil {
				t.Fatal(err)
			}
			if got, _ = st.Get(ctx, "env_a", "conn_1", false); got.Status != StatusError || got.LastError != "503" {
				t.Fatalf("a refresh undid a delivery error: %s %q", got.Status, got.LastError)
			}
			gone := &Connection{ID: "conn_gone", Env: "env_a", CredentialsVersion: 1}
			if err := st.UpdateCredentials(ctx, gone, CredentialWrite{}); err == nil || errors.Is(err, ErrCredentialsChanged) {
				t.Fatalf("write to a missing connection = %v, want NotFound", err)
			}
		})
	}
}

// Used states are deleted; expired ones are deleted by the sweep; a state
// presented without its browser's nonce is refused and kept.
func TestOAuthStatesUsedOnceBoundAndSwept(t *testing.T) {
	for name, db := range backends() {
		t.Run(name, func(t *testing.T) {
			d := db(t)
			st := open(t, d)
			ctx := context.Background()
			now := time.Now()
			st.now = func() time.Time { return now }
			save := func(state, browser string, ttl time.Duration) {
				if err := st.SaveState(ctx, state, OAuthState{Env: "env_a", Type: "commandbar", Name: "CB", Account: "org-1", Verifier: "v", Expires: now.Add(ttl), Browser: browser}); err != nil {
					t.Fatal(err)
				}
			}
			count := func() (n int) {
				if err := d.QueryRowContext(ctx, `SELECT COUNT(*) FROM cn_oauth_states`).Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			}
			save("s1", "browser-one", time.Minute)
			if _, err := st.UseState(ctx, "s1", ""); !errors.Is(err, ErrOtherBrowser) {
				t.Fatalf("no cookie = %v", err)
			}
			if _, err := st.UseState(ctx, "s1", "browser-two"); !errors.Is(err, ErrOtherBrowser) {
				t.Fatalf("another browser = %v", err)
			}
			got, err := st.UseState(ctx, "s1", "browser-one")
			if err != nil || got.Verifier != "v" || got.Account != "org-1" {
				t.Fatalf("own browser = %v, %v", got, err)
			}
			if n := count(); n != 0 {
				t.Fatalf("%d states left after use", n)
			}
			if _, err := st.UseState(ctx, "s1", "browser-one"); !errors.Is(err, ErrBadState) {
				t.Fatalf("replay = %v", err)
			}
			save("s2", "browser-one", time.Minute)
			save("s3", "browser-one", 3*time.Minute)
			now = now.Add(2 * time.Minute)
			if _, err := st.UseState(ctx, "s2", "browser-one"); !errors.Is(err, ErrBadState) {
				t.Fatalf("expired = %v", err)
			}
			if n, err := st.SweepStates(ctx); err != nil || n != 1 {
				t.Fatalf("sweep = %d, %v; want the one expired state", n, err)
			}
			if n := count(); n != 1 {
				t.Fatalf("%d states after the sweep, want the unexpired one", n)
			}
		})
	}
}
