package connector_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
	"github.com/seghub/seghub/pkg/app"
	"github.com/seghub/seghub/pkg/app/apptest"
	"github.com/seghub/seghub/pkg/auth"
	"github.com/seghub/seghub/pkg/config"
	"github.com/seghub/seghub/pkg/destinations"
	"github.com/seghub/seghub/services/connector"
	"github.com/seghub/seghub/services/destsim"
	"github.com/seghub/seghub/services/gateway"
)

type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *logBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

type fixture struct {
	e    *apptest.Env
	sim  *destsim.Sim
	gw   *httptest.Server
	logs *apptest.LogBuffer
	c    connectorv1.ConnectorServiceClient
	svc  *connector.Service
}

func start(t *testing.T, postgres bool) *fixture {
	t.Helper()
	return startWith(t, postgres, destsim.DemoCredentials())
}

// startWith starts the connector and gateway against a simulator that
// accepts creds.
func startWith(t *testing.T, postgres bool, creds destsim.Credentials) *fixture {
	t.Helper()
	sim := destsim.New(creds)
	simSrv := httptest.NewServer(sim)
	t.Cleanup(simSrv.Close)
	f := &fixture{sim: sim, logs: &apptest.LogBuffer{}}
	// The gateway's URL is known only once it listens; a handler swapped in
	// later lets the OAuth redirect URL point at it from the start.
	var gwHandler http.Handler = http.NotFoundHandler()
	var mu sync.RWMutex
	f.gw = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.RLock()
		h := gwHandler
		mu.RUnlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(f.gw.Close)
	f.e = apptest.New(t, apptest.Options{Postgres: postgres, LogOutput: f.logs, Configure: func(c *config.Config) {
		c.AppcuesURL, c.CommandBarURL, c.ABTastyURL, c.AnalyticsURL = simSrv.URL, simSrv.URL, simSrv.URL, simSrv.URL
		c.PublicURL = f.gw.URL
	}})
	svc, err := connector.New(context.Background(), f.e.P)
	if err != nil {
		t.Fatal(err)
	}
	f.svc = svc
	f.e.Add(svc)
	f.e.Start()
	gw, err := gateway.New(context.Background(), f.e.P)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	gwHandler = gw.Handler()
	mu.Unlock()
	f.c = connectorv1.NewConnectorServiceClient(f.e.Dial(f.e.A.Admin))
	return f
}

func code(t *testing.T, err error, want codes.Code, mention string) {
	t.Helper()
	if status.Code(err) != want || !strings.Contains(status.Convert(err).Message(), mention) {
		t.Fatalf("got %v, want %v mentioning %q", err, want, mention)
	}
}

// CommandBar's recurring-sync limit depends on the customer's plan: the
// catalogue answers the setting, the other types keep the documented ten.
func TestCatalogueRecurringLimitFollowsCommandBarSetting(t *testing.T) {
	for _, tc := range []struct {
		setting, want int
	}{{0, 10}, {25, 25}, {3, 3}} {
		t.Run(fmt.Sprint(tc.setting), func(t *testing.T) {
			e := apptest.New(t, apptest.Options{Configure: func(c *config.Config) {
				if tc.setting > 0 {
					c.CommandBarRecurringLimit = tc.setting
				}
			}})
			svc, err := connector.New(context.Background(), e.P)
			if err != nil {
				t.Fatal(err)
			}
			e.Add(svc)
			e.Start()
			resp, err := connectorv1.NewConnectorServiceClient(e.Dial(e.A.Member)).ListDestinationTypes(apptest.Context(t, 30*time.Second), &connectorv1.ListDestinationTypesRequest{})
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range resp.GetTypes() {
				want := uint32(10)
				switch d.GetType() {
				case "commandbar":
					want = uint32(tc.want)
				case "analytics", "heap", "segment_webhook":
					want = 0 // no segments out: no limit to state
				}
				if d.GetRecurringLimit() != want {
					t.Errorf("%s recurring_limit = %d with the setting at %d, want %d", d.GetType(), d.GetRecurringLimit(), tc.setting, want)
				}
			}
		})
	}
}

func TestCatalogue(t *testing.T) {
	f := start(t, false)
	resp, err := connectorv1.NewConnectorServiceClient(f.e.Dial(f.e.A.Member)).ListDestinationTypes(context.Background(), &connectorv1.ListDestinationTypesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*connectorv1.DestinationType{}
	for _, d := range resp.GetTypes() {
		byName[d.GetType()] = d
	}
	ac := byName["appcues"]
	if ac.GetAuthMethod() != connectorv1.AuthMethod_AUTH_METHOD_API_KEY || ac.GetRecurringLimit() != 10 || ac.GetDefaultInterval().AsDuration() != time.Hour || !ac.GetSegmentsOut() || !ac.GetEventsIn() {
		t.Fatalf("appcues = %v", ac)
	}
	if cb := byName["commandbar"]; cb.GetAuthMethod() != connectorv1.AuthMethod_AUTH_METHOD_OAUTH2 || cb.GetDefaultInterval().AsDuration() != 4*time.Hour {
		t.Fatalf("commandbar = %v", cb)
	}
	if ab := byName["abtasty"]; ab.GetRetention().AsDuration() != 30*24*time.Hour {
		t.Fatalf("abtasty = %v", ab)
	}
	for _, n := range []string{"webhook", "analytics", "heap"} {
		if byName[n] == nil {
			t.Fatalf("catalogue lacks %s", n)
		}
	}
}

func TestAPIKeyConnections(t *testing.T) {
	for _, pg := range []bool{false, true} {
		t.Run(map[bool]string{false: "sqlite", true: "postgres"}[pg], func(t *testing.T) {
			f := start(t, pg)
			ctx := apptest.Context(t, 30*time.Second)
			_, err := f.c.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "appcues", Name: "Appcues prod", Credentials: map[string]string{"account_id": "demo", "api_key": "demo-key", "api_secret": "wrong-secret"}})
			code(t, err, codes.FailedPrecondition, "refused")
			if l, _ := f.c.ListConnections(ctx, &connectorv1.ListConnectionsRequest{}); len(l.GetConnections()) != 0 {
				t.Fatalf("a refused key was saved: %v", l)
			}
			_, err = f.c.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "appcues", Name: "x", Credentials: map[string]string{"account_id": "demo"}})
			code(t, err, codes.InvalidArgument, "api_key")
			_, err = f.c.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "commandbar", Name: "x"})
			code(t, err, codes.FailedPrecondition, "StartAuthorization")
			_, err = f.c.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "nope", Name: "x"})
			code(t, err, codes.InvalidArgument, "appcues")

			created, err := f.c.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "appcues", Name: "Appcues prod",
				Credentials: map[string]string{"account_id": "demo", "api_key": "demo-key", "api_secret": "demo-secret"},
				Settings:    &connectorv1.ConnectionSettings{SendEvents: true}})
			if err != nil {
				t.Fatal(err)
			}
			conn := created.GetConnection()
			if conn.GetSettings().GetIdentityProperty() != "appcuesUserID" || conn.GetAccount() != "demo" || conn.GetStatus() != connectorv1.ConnectionStatus_CONNECTION_STATUS_CONNECTED || !strings.HasPrefix(created.GetSigningSecret(), "whsec_") {
				t.Fatalf("created = %v", created)
			}
			// Members read, but cannot change connections.
			member := connectorv1.NewConnectorServiceClient(f.e.Dial(f.e.A.Member))
			if _, err := member.GetConnection(ctx, &connectorv1.GetConnectionRequest{ConnectionId: conn.GetConnectionId()}); err != nil {
				t.Fatal(err)
			}
			_, err = member.DeleteConnection(ctx, &connectorv1.DeleteConnectionRequest{ConnectionId: conn.GetConnectionId()})
			code(t, err, codes.PermissionDenied, "admin")
			// Another environment does not see it.
			_, err = connectorv1.NewConnectorServiceClient(f.e.Dial(f.e.B.Admin)).GetConnection(ctx, &connectorv1.GetConnectionRequest{ConnectionId: conn.GetConnectionId()})
			code(t, err, codes.NotFound, conn.GetConnectionId())

			// Settings change; credentials are never in any answer.
			upd, err := f.c.UpdateConnection(ctx, &connectorv1.UpdateConnectionRequest{ConnectionId: conn.GetConnectionId(), Settings: &connectorv1.ConnectionSettings{SendEvents: false, IdentityProperty: "user_id"}})
			if err != nil || upd.GetConnection().GetSettings().GetSendEvents() || upd.GetConnection().GetSettings().GetIdentityProperty() != "user_id" {
				t.Fatalf("update = %v, %v", upd, err)
			}
			list, _ := f.c.ListConnections(ctx, &connectorv1.ListConnectionsRequest{})
			for _, answer := range [][]byte{mustJSON(t, created.GetConnection()), mustJSON(t, upd), mustJSON(t, list)} {
				if bytes.Contains(answer, []byte("demo-secret")) || bytes.Contains(answer, []byte("demo-key")) {
					t.Fatalf("credentials in an answer: %s", answer)
				}
			}
			// Internal resolution decrypts them for seghub's own services.
			internal := connectorv1.NewConnectorServiceClient(mustConn(t, f.e.P))
			rctx := auth.ForEnvironment(ctx, f.e.A.EnvironmentID)
			res, err := internal.ResolveConnection(rctx, &connectorv1.ResolveConnectionRequest{ConnectionId: conn.GetConnectionId()})
			if err != nil || res.GetCredentials()["api_secret"] != "demo-secret" || res.GetSigningSecret() != created.GetSigningSecret() {
				t.Fatalf("resolve = %v, %v", res, err)
			}
			rep, err := internal.ReportConnectionStatus(rctx, &connectorv1.ReportConnectionStatusRequest{ConnectionId: conn.GetConnectionId(), Status: connectorv1.ConnectionStatus_CONNECTION_STATUS_NEEDS_REAUTH, Message: "401 from Appcues"})
			if err != nil || rep.GetConnection().GetStatus() != connectorv1.ConnectionStatus_CONNECTION_STATUS_NEEDS_REAUTH || rep.GetConnection().GetLastErrorTime() == nil {
				t.Fatalf("report = %v, %v", rep, err)
			}
			if !pg {
				// The database file holds the credentials only encrypted.
				raw, err := os.ReadFile(filepath.Join(f.e.Config.DataDir, "seghub.db"))
				if err != nil {
					t.Fatal(err)
				}
				wal, _ := os.ReadFile(filepath.Join(f.e.Config.DataDir, "seghub.db-wal"))
				for _, secret := range []string{"demo-secret", created.GetSigningSecret()} {
					if bytes.Contains(raw, []byte(secret)) || bytes.Contains(wal, []byte(secret)) {
						t.Fatalf("%q readable in the database file", secret)
					}
				}
			}
			if strings.Contains(f.logs.String(), "demo-secret") || strings.Contains(f.logs.String(), created.GetSigningSecret()) {
				t.Fatal("credentials in the logs")
			}
			if !strings.Contains(f.logs.String(), "CreateConnection") {
				t.Fatal("logs were not captured; the secret check above proves nothing")
			}
			if _, err := f.c.DeleteConnection(ctx, &connectorv1.DeleteConnectionRequest{ConnectionId: conn.GetConnectionId()}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A key rotation through UpdateConnection survives status reports (every
// 401 reports one) and settings changes racing it: neither writes the
// credentials it read before the rotation back over the new ones.
func TestCredentialUpdatesSurviveStatusReports(t *testing.T) {
	const iterations = 25
	creds := destsim.DemoCredentials()
	for i := range iterations {
		creds.AppcuesAccounts[fmt.Sprintf("acct-%d", i)] = fmt.Sprintf("key-%d:secret-%d", i, i)
	}
	for _, pg := range []bool{false, true} {
		t.Run(map[bool]string{false: "sqlite", true: "postgres"}[pg], func(t *testing.T) {
			f := startWith(t, pg, creds)
			ctx := apptest.Context(t, 120*time.Second)
			created, err := f.c.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "appcues", Name: "Appcues",
				Credentials: map[string]string{"account_id": "demo", "api_key": "demo-key", "api_secret": "demo-secret"}})
			if err != nil {
				t.Fatal(err)
			}
			id := created.GetConnection().GetConnectionId()
			internal := connectorv1.NewConnectorServiceClient(mustConn(t, f.e.P))
			rctx := auth.ForEnvironment(ctx, f.e.A.EnvironmentID)
			for i := range iterations {
				rotated := make(chan struct{})
				var wg sync.WaitGroup
				wg.Go(func() {
					defer close(rotated)
					_, err := f.c.UpdateConnection(ctx, &connectorv1.UpdateConnectionRequest{ConnectionId: id, Credentials: map[string]string{
						"account_id": fmt.Sprintf("acct-%d", i), "api_key": fmt.Sprintf("key-%d", i), "api_secret": fmt.Sprintf("secret-%d", i)}})
					if err != nil {
						t.Error(err)
					}
				})
				for range 2 {
					wg.Go(func() {
						for {
							select {
							case <-rotated:
								return
							default:
							}
							if _, err := internal.ReportConnectionStatus(rctx, &connectorv1.ReportConnectionStatusRequest{ConnectionId: id, Status: connectorv1.ConnectionStatus_CONNECTION_STATUS_ERROR, Message: "503 from Appcues"}); err != nil {
								t.Error(err)
								return
							}
						}
					})
				}
				wg.Go(func() {
					for n := 0; ; n++ {
						select {
						case <-rotated:
							return
						default:
						}
						if _, err := f.c.UpdateConnection(ctx, &connectorv1.UpdateConnectionRequest{ConnectionId: id, Settings: &connectorv1.ConnectionSettings{SendEvents: n%2 == 0}}); err != nil {
							t.Error(err)
							return
						}
					}
				})
				wg.Wait()
				res, err := internal.ResolveConnection(rctx, &connectorv1.ResolveConnectionRequest{ConnectionId: id})
				if err != nil {
					t.Fatal(err)
				}
				if got := res.GetCredentials(); got["api_secret"] != fmt.Sprintf("secret-%d", i) || got["account_id"] != fmt.Sprintf("acct-%d", i) || res.GetConnection().GetAccount() != got["account_id"] {
					t.Fatalf("iteration %d: after rotating to acct-%d the connection holds account %q with credentials of %q", i, i, res.GetConnection().GetAccount(), got["account_id"])
				}
			}
		})
	}
}

// Token refreshes racing each other and status reports never put back a
// refresh token that was already used: with a destination that rotates
// refresh tokens (each is single-use), a stale one written back would end
// in needs_reauth at the next refresh. The stored credentials, decrypted,
// are the newest ones handed out.
func TestRefreshNeverOverwritesNewerCredentials(t *testing.T) {
	for _, pg := range []bool{false, true} {
		t.Run(map[bool]string{false: "sqlite", true: "postgres"}[pg], func(t *testing.T) {
			f := start(t, pg)
			ctx := apptest.Context(t, 120*time.Second)
			f.sim.SetFaults(destsim.Faults{TokenTTL: 60, RotateRefresh: true}) // every resolve refreshes
			var md metadata.MD
			started, err := f.c.StartAuthorization(ctx, &connectorv1.StartAuthorizationRequest{Type: "commandbar", Name: "CommandBar", Account: "org-1"}, grpc.Header(&md))
			if err != nil {
				t.Fatal(err)
			}
			if status, page := follow(t, authorizeRedirect(t, started.GetAuthorizeUrl()), md.Get("seghub-oauth-browser")[0]); status != 200 {
				t.Fatalf("callback = %d %s", status, page)
			}
			list, _ := f.c.ListConnections(ctx, &connectorv1.ListConnectionsRequest{Type: "commandbar"})
			id := list.GetConnections()[0].GetConnectionId()
			internal := connectorv1.NewConnectorServiceClient(mustConn(t, f.e.P))
			rctx := auth.ForEnvironment(ctx, f.e.A.EnvironmentID)
			var refreshes []string
			defer func() {
				// Proof the race was one of refreshes: every round stored a new token.
				if !t.Failed() && len(slices.Compact(slices.Clone(refreshes))) != len(refreshes) {
					t.Errorf("the stored token did not change every round: %v", refreshes)
				}
			}()
			for i := range 20 {
				var wg sync.WaitGroup
				for range 3 {
					wg.Go(func() {
						if _, err := internal.ResolveConnection(rctx, &connectorv1.ResolveConnectionRequest{ConnectionId: id}); err != nil {
							t.Errorf("iteration %d: resolve: %v", i, err)
						}
					})
				}
				for _, st := range []connectorv1.ConnectionStatus{connectorv1.ConnectionStatus_CONNECTION_STATUS_ERROR, connectorv1.ConnectionStatus_CONNECTION_STATUS_CONNECTED} {
					wg.Go(func() {
						if _, err := internal.ReportConnectionStatus(rctx, &connectorv1.ReportConnectionStatusRequest{ConnectionId: id, Status: st, Message: "503 from CommandBar"}); err != nil {
							t.Errorf("iteration %d: report: %v", i, err)
						}
					})
				}
				wg.Wait()
				if t.Failed() {
					t.FailNow()
				}
				last, err := internal.ResolveConnection(rctx, &connectorv1.ResolveConnectionRequest{ConnectionId: id})
				if err != nil {
					t.Fatalf("iteration %d: the refresh after the race failed (a used refresh token was stored): %v", i, err)
				}
				var sealed []byte
				if err := f.e.P.DB.QueryRowContext(ctx, `SELECT credentials FROM cn_connections WHERE connection_id = ?`, id).Scan(&sealed); err != nil {
					t.Fatal(err)
				}
				plain, err := f.e.P.Secrets.Open(sealed, []byte("credentials:"+id))
				if err != nil {
					t.Fatal(err)
				}
				var stored map[string]string
				if err := json.Unmarshal(plain, &stored); err != nil {
					t.Fatal(err)
				}
				if stored["refresh_token"] != last.GetCredentials()["refresh_token"] || stored["access_token"] != last.GetCredentials()["access_token"] {
					t.Fatalf("iteration %d: stored credentials are not the newest handed out", i)
				}
				refreshes = append(refreshes, stored["access_token"])
			}
		})
	}
}

func mustJSON(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustQuery(t *testing.T, u string) url.Values {
	t.Helper()
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	return pu.Query()
}

func mustConn(t *testing.T, p *app.Platform) *grpc.ClientConn {
	c, err := p.Conn(app.Connector)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// follow opens a callback URL like a browser holding the seghub_oauth
// cookie nonce (none when empty), returning the page.
func follow(t *testing.T, u, nonce string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if nonce != "" {
		req.AddCookie(&http.Cookie{Name: "seghub_oauth", Value: nonce})
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// authorizeRedirect returns the callback URL the simulator redirects to,
// without following it.
func authorizeRedirect(t *testing.T, u string) string {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.Header.Get("Location")
}

// stateRows counts the stored rows of an OAuth state.
func stateRows(t *testing.T, f *fixture, state string) int {
	t.Helper()
	sum := sha256.Sum256([]byte(state))
	var n int
	if err := f.e.P.DB.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM cn_oauth_states WHERE state_hash = ?`, hex.EncodeToString(sum[:])).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestOAuthFlow(t *testing.T) {
	creds := destsim.DemoCredentials()
	creds.OAuthOrgs = []string{"org-7", "org-8"} // the organisations of the user who clicks "Allow"
	f := startWith(t, false, creds)
	ctx := apptest.Context(t, 60*time.Second)
	f.sim.SetFaults(destsim.Faults{TokenTTL: 60}) // expires within the refresh margin
	// startAuth starts a flow over gRPC, as a client without a browser: it
	// receives the browser nonce to hand to the browser that completes it.
	startAuthFor := func(account string) (authorizeURL, nonce string) {
		var md metadata.MD
		r, err := f.c.StartAuthorization(ctx, &connectorv1.StartAuthorizationRequest{Type: "commandbar", Name: "CommandBar " + account, Account: account, Settings: &connectorv1.ConnectionSettings{SendEvents: true}}, grpc.Header(&md))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(r.GetAuthorizeUrl(), "code_challenge_method=S256") || !strings.Contains(r.GetAuthorizeUrl(), "state=") {
			t.Fatalf("authorize url = %s", r.GetAuthorizeUrl())
		}
		if n := md.Get("seghub-oauth-browser"); len(n) != 1 || len(n[0]) < 32 {
			t.Fatalf("no browser nonce returned: %v", md)
		}
		return r.GetAuthorizeUrl(), md.Get("seghub-oauth-browser")[0]
	}
	startAuth := func() (string, string) { return startAuthFor("org-7") }

	// The whole flow through the browser redirect and the gateway callback.
	u, nonce := startAuth()
	cb := authorizeRedirect(t, u)
	state := mustQuery(t, cb).Get("state")
	// Without the browser's cookie, or with another browser's, the callback
	// is refused, and the state stays for the browser that started it.
	status, page := follow(t, cb, "")
	if status != 403 || !strings.Contains(page, "another browser") {
		t.Fatalf("callback without the cookie = %d %s", status, page)
	}
	_, otherNonce := startAuth()
	if status, _ = follow(t, cb, otherNonce); status != 403 {
		t.Fatalf("callback with another browser's cookie = %d", status)
	}
	if stateRows(t, f, state) != 1 {
		t.Fatal("a refused browser consumed the state")
	}
	status, page = follow(t, cb, nonce)
	if status != 200 || !strings.Contains(page, "Connected") {
		t.Fatalf("callback = %d %s", status, page)
	}
	list, _ := f.c.ListConnections(ctx, &connectorv1.ListConnectionsRequest{Type: "commandbar"})
	if len(list.GetConnections()) != 1 || list.GetConnections()[0].GetAccount() != "org-7" {
		t.Fatalf("connections = %v", list)
	}
	connID := list.GetConnections()[0].GetConnectionId()
	// A used state is gone, not kept marked.
	if stateRows(t, f, state) != 0 {
		t.Fatal("the used state is still stored")
	}

	// A replayed callback (same state and code) is refused.
	status, page = follow(t, cb, nonce)
	if status != 403 || !strings.Contains(page, "invalid OAuth state") {
		t.Fatalf("replayed state = %d %s", status, page)
	}
	// A tampered state is refused.
	status, _ = follow(t, strings.Replace(cb, "state=", "state=x", 1), nonce)
	if status != 403 {
		t.Fatalf("tampered state = %d", status)
	}
	// An expired state is refused, and the sweep deletes it.
	u2, nonce2 := startAuth()
	cb2 := authorizeRedirect(t, u2)
	if _, err := f.e.P.DB.ExecContext(ctx, `UPDATE cn_oauth_states SET expires_at = ?`, time.Now().Add(-time.Minute).UnixMicro()); err != nil {
		t.Fatal(err)
	}
	status, _ = follow(t, cb2, nonce2)
	if status != 403 {
		t.Fatalf("expired state = %d", status)
	}
	if n, err := f.svc.SweepExpiredStates(ctx); err != nil || n < 2 || stateRows(t, f, mustQuery(t, cb2).Get("state")) != 0 {
		t.Fatalf("sweep = %d, %v; the expired states are still stored", n, err)
	}
	// A state started by environment A, completed on behalf of B, is refused.
	u3, nonce3 := startAuth()
	internal := connectorv1.NewConnectorServiceClient(mustConn(t, f.e.P))
	q := mustQuery(t, authorizeRedirect(t, u3))
	bctx := metadata.AppendToOutgoingContext(auth.ForEnvironment(ctx, f.e.B.EnvironmentID), "seghub-oauth-browser", nonce3)
	_, err := internal.CompleteAuthorization(bctx, &connectorv1.CompleteAuthorizationRequest{State: q.Get("state"), Code: q.Get("code")})
	code(t, err, codes.PermissionDenied, "invalid OAuth state")
	// A code presented with another authorisation's PKCE verifier is refused
	// by the destination.
	u4, _ := startAuth()
	u5, nonce5 := startAuth()
	first, second := mustQuery(t, authorizeRedirect(t, u4)), mustQuery(t, authorizeRedirect(t, u5))
	_, err = internal.CompleteAuthorization(metadata.AppendToOutgoingContext(ctx, "seghub-oauth-browser", nonce5), &connectorv1.CompleteAuthorizationRequest{State: second.Get("state"), Code: first.Get("code")})
	code(t, err, codes.FailedPrecondition, "refused the authorisation code")
	// An account the user does not hold at CommandBar: the token grants
	// another, and the connection is refused, naming the field.
	u6, nonce6 := startAuthFor("org-9")
	status, page = follow(t, authorizeRedirect(t, u6), nonce6)
	if status != 403 || !strings.Contains(page, "account:") || !strings.Contains(page, "org-7") || !strings.Contains(page, "org-9") {
		t.Fatalf("account not granted = %d %s", status, page)
	}
	u7, nonce7 := startAuthFor("org-9")
	q7 := mustQuery(t, authorizeRedirect(t, u7))
	_, err = internal.CompleteAuthorization(metadata.AppendToOutgoingContext(ctx, "seghub-oauth-browser", nonce7), &connectorv1.CompleteAuthorizationRequest{State: q7.Get("state"), Code: q7.Get("code")})
	code(t, err, codes.PermissionDenied, `account: CommandBar granted access to "org-7", not "org-9"`)
	// The user's other organisation, asked for, is granted.
	u8, nonce8 := startAuthFor("org-8")
	if status, page = follow(t, authorizeRedirect(t, u8), nonce8); status != 200 {
		t.Fatalf("second organisation = %d %s", status, page)
	}
	if list, _ := f.c.ListConnections(ctx, &connectorv1.ListConnectionsRequest{Type: "commandbar"}); len(list.GetConnections()) != 2 {
		t.Fatalf("connections after refusals = %v", list)
	}

	// Tokens refresh before expiry; the adapter delivers with them.
	rctx := auth.ForEnvironment(ctx, f.e.A.EnvironmentID)
	r1, err := internal.ResolveConnection(rctx, &connectorv1.ResolveConnectionRequest{ConnectionId: connID})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := internal.ResolveConnection(rctx, &connectorv1.ResolveConnectionRequest{ConnectionId: connID})
	if err != nil || r2.GetCredentials()["access_token"] == r1.GetCredentials()["access_token"] {
		t.Fatalf("token within the refresh margin was not refreshed: %v", err)
	}
	a, err := destinations.New("commandbar", destinations.Config{BaseURL: f.e.Config.CommandBarURL, Credentials: r2.GetCredentials(), Egress: f.e.P.Egress})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.(destinations.Segments).DeliverSegment(ctx, destinations.SegmentBatch{DisplayName: "Trial", Add: []destinations.Identity{{UserID: "u1", ID: "u1"}}}); err != nil {
		t.Fatal(err)
	}
	if f.sim.Snapshot().CommandBar["org-7"]["u1"]["Trial"] != true {
		t.Fatal("delivery with the refreshed token did not land")
	}
	// A refused refresh marks the connection needs_reauth.
	f.sim.SetFaults(destsim.Faults{TokenTTL: 60, RefuseRefresh: true})
	_, err = internal.ResolveConnection(rctx, &connectorv1.ResolveConnectionRequest{ConnectionId: connID})
	code(t, err, codes.FailedPrecondition, "re-authorisation")
	g, _ := f.c.GetConnection(ctx, &connectorv1.GetConnectionRequest{ConnectionId: connID})
	if g.GetConnection().GetStatus() != connectorv1.ConnectionStatus_CONNECTION_STATUS_NEEDS_REAUTH {
		t.Fatalf("status after refused refresh = %v", g.GetConnection().GetStatus())
	}
	if strings.Contains(f.logs.String(), r2.GetCredentials()["access_token"]) || strings.Contains(f.logs.String(), r2.GetCredentials()["refresh_token"]) {
		t.Fatal("tokens in the logs")
	}
}

// The browser's way: the REST start call through the gateway sets the
// seghub_oauth cookie (HttpOnly, SameSite=Lax, Path=/oauth, as long as the
// state lives); the browser carries it back to the callback, which then
// clears it. The caller cannot choose the nonce.
func TestOAuthBrowserFlow(t *testing.T) {
	f := start(t, false)
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	browser := &http.Client{Jar: jar}
	req, _ := http.NewRequest("POST", f.gw.URL+"/v1/connections:authorize", strings.NewReader(`{"type":"commandbar","name":"CommandBar","account":"org-1"}`))
	req.Header.Set("Authorization", "Bearer "+f.e.A.Admin)
	req.Header.Set("Grpc-Metadata-Seghub-Oauth-Browser", strings.Repeat("a", 43))
	resp, err := browser.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var started connectorv1.StartAuthorizationResponse
	if resp.StatusCode != 200 || protojson.Unmarshal(body, &started) != nil {
		t.Fatalf("start = %d %s", resp.StatusCode, body)
	}
	var ck *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "seghub_oauth" {
			ck = c
		}
	}
	if ck == nil || !ck.HttpOnly || ck.SameSite != http.SameSiteLaxMode || ck.Path != "/oauth" || ck.MaxAge != int(f.e.Config.OAuthStateTTL/time.Second) || ck.Secure {
		t.Fatalf("cookie = %+v", ck)
	}
	if ck.Value == strings.Repeat("a", 43) || resp.Header.Get("Grpc-Metadata-Seghub-Oauth-Browser") != "" {
		t.Fatalf("the caller chose or saw the browser nonce: cookie %q", ck.Value)
	}
	// A refused start leaves the cookie of the flow in progress alone.
	req, _ = http.NewRequest("POST", f.gw.URL+"/v1/connections:authorize", strings.NewReader(`{"type":"commandbar","name":"CommandBar"}`))
	req.Header.Set("Authorization", "Bearer "+f.e.A.Admin)
	if resp, err = browser.Do(req); err != nil || resp.StatusCode != 400 || len(resp.Cookies()) != 0 {
		t.Fatalf("refused start = %v, %v", resp, err)
	}
	resp.Body.Close()

	resp, err = browser.Get(started.GetAuthorizeUrl()) // the simulator approves and redirects to the callback
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "Connected") {
		t.Fatalf("callback = %d %s", resp.StatusCode, page)
	}
	gw, _ := url.Parse(f.gw.URL + "/oauth/callback")
	if left := jar.Cookies(gw); len(left) != 0 {
		t.Fatalf("the callback left the cookie: %v", left)
	}
}

// ListConnections pages in (name, id) order: walking next_page_token returns
// every connection (of the type) once; REST takes the same query parameters.
func TestListConnectionsPages(t *testing.T) {
	for _, pg := range []bool{false, true} {
		t.Run(map[bool]string{false: "sqlite", true: "postgres"}[pg], func(t *testing.T) {
			f := start(t, pg)
			ctx := apptest.Context(t, 30*time.Second)
			for _, name := range []string{"Heap c", "Heap a", "Heap e", "Heap b", "Heap d"} {
				if _, err := f.c.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "heap", Name: name}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := f.c.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "segment_webhook", Name: "Heap by email", Settings: &connectorv1.ConnectionSettings{IdentityProperty: "email"}}); err != nil {
				t.Fatal(err)
			}
			member := connectorv1.NewConnectorServiceClient(f.e.Dial(f.e.A.Member))
			walk := func(typ string) []string {
				var names []string
				req := &connectorv1.ListConnectionsRequest{Type: typ, PageSize: 2}
				for pages := 1; ; pages++ {
					resp, err := member.ListConnections(ctx, req)
					if err != nil {
						t.Fatal(err)
					}
					if len(resp.GetConnections()) > 2 || pages > 3 {
						t.Fatalf("page %d of %q holds %d connections", pages, typ, len(resp.GetConnections()))
					}
					for _, c := range resp.GetConnections() {
						names = append(names, c.GetName())
					}
					if resp.GetNextPageToken() == "" {
						return names
					}
					req.PageToken = resp.GetNextPageToken()
				}
			}
			if got := strings.Join(walk("heap"), ","); got != "Heap a,Heap b,Heap c,Heap d,Heap e" {
				t.Fatalf("heap pages = %s", got)
			}
			if got := strings.Join(walk(""), ","); got != "Heap a,Heap b,Heap by email,Heap c,Heap d,Heap e" {
				t.Fatalf("pages = %s", got)
			}
			// page_size 0 is one default page, as before pagination.
			if all, err := member.ListConnections(ctx, &connectorv1.ListConnectionsRequest{}); err != nil || len(all.GetConnections()) != 6 || all.GetNextPageToken() != "" {
				t.Fatalf("default page = %v, %v", all, err)
			}
			_, err := member.ListConnections(ctx, &connectorv1.ListConnectionsRequest{PageToken: "garbage!"})
			code(t, err, codes.InvalidArgument, "page_token")

			// REST: page_size and page_token are query parameters.
			rest := func(query string, into *connectorv1.ListConnectionsResponse) int {
				req, _ := http.NewRequest("GET", f.gw.URL+"/v1/connections?"+query, nil)
				req.Header.Set("Authorization", "Bearer "+f.e.A.Member)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode == http.StatusOK {
					if err := protojson.Unmarshal(body, into); err != nil {
						t.Fatalf("%s: %v", body, err)
					}
				}
				return resp.StatusCode
			}
			var p1, p2 connectorv1.ListConnectionsResponse
			if code := rest("type=heap&page_size=2", &p1); code != http.StatusOK || len(p1.GetConnections()) != 2 || p1.GetNextPageToken() == "" {
				t.Fatalf("REST first page = %d %v", code, &p1)
			}
			if code := rest("type=heap&page_size=2&page_token="+url.QueryEscape(p1.GetNextPageToken()), &p2); code != http.StatusOK || len(p2.GetConnections()) != 2 || p2.GetConnections()[0].GetName() != "Heap c" {
				t.Fatalf("REST second page = %d %v", code, &p2)
			}
			if code := rest("page_token=garbage!", &p1); code != http.StatusBadRequest {
				t.Fatalf("REST bad page_token = %d, want 400", code)
			}
		})
	}
}
