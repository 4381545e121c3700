package connector_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
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
}

func start(t *testing.T, postgres bool) *fixture {
	t.Helper()
	sim := destsim.New(destsim.DemoCredentials())
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
			upd, err := f.c.UpdateConnection(ctx, &connectorv1.UpdateConnectionRequest{ConnectionId: conn.GetConnectionId(), Settings: &connectorv1.ConnectionSettings{SendEvents: false, IdentityProperty: "email"}})
			if err != nil || upd.GetConnection().GetSettings().GetSendEvents() || upd.GetConnection().GetSettings().GetIdentityProperty() != "email" {
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

// follow opens an authorize URL like a browser: the simulator approves and
// redirects to the gateway's callback, whose page is returned.
func follow(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
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

func TestOAuthFlow(t *testing.T) {
	f := start(t, false)
	ctx := apptest.Context(t, 60*time.Second)
	f.sim.SetFaults(destsim.Faults{TokenTTL: 60}) // expires within the refresh margin
	startAuth := func() string {
		r, err := f.c.StartAuthorization(ctx, &connectorv1.StartAuthorizationRequest{Type: "commandbar", Name: "CommandBar", Account: "org-7", Settings: &connectorv1.ConnectionSettings{SendEvents: true}})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(r.GetAuthorizeUrl(), "code_challenge_method=S256") || !strings.Contains(r.GetAuthorizeUrl(), "state=") {
			t.Fatalf("authorize url = %s", r.GetAuthorizeUrl())
		}
		return r.GetAuthorizeUrl()
	}

	// The whole flow through the browser redirect and the gateway callback.
	cb := authorizeRedirect(t, startAuth())
	status, page := follow(t, cb)
	if status != 200 || !strings.Contains(page, "Connected") {
		t.Fatalf("callback = %d %s", status, page)
	}
	list, _ := f.c.ListConnections(ctx, &connectorv1.ListConnectionsRequest{Type: "commandbar"})
	if len(list.GetConnections()) != 1 || list.GetConnections()[0].GetAccount() != "org-7" {
		t.Fatalf("connections = %v", list)
	}
	connID := list.GetConnections()[0].GetConnectionId()

	// A replayed callback (same state and code) is refused.
	status, page = follow(t, cb)
	if status != 403 || !strings.Contains(page, "invalid OAuth state") {
		t.Fatalf("replayed state = %d %s", status, page)
	}
	// A tampered state is refused.
	status, _ = follow(t, strings.Replace(cb, "state=", "state=x", 1))
	if status != 403 {
		t.Fatalf("tampered state = %d", status)
	}
	// An expired state is refused.
	cb2 := authorizeRedirect(t, startAuth())
	if _, err := f.e.P.DB.ExecContext(ctx, `UPDATE cn_oauth_states SET expires_at = ? WHERE used_at IS NULL`, time.Now().Add(-time.Minute).UnixMicro()); err != nil {
		t.Fatal(err)
	}
	status, _ = follow(t, cb2)
	if status != 403 {
		t.Fatalf("expired state = %d", status)
	}
	// A state started by environment A, completed on behalf of B, is refused.
	cb3 := authorizeRedirect(t, startAuth())
	internal := connectorv1.NewConnectorServiceClient(mustConn(t, f.e.P))
	q := mustQuery(t, cb3)
	_, err := internal.CompleteAuthorization(auth.ForEnvironment(ctx, f.e.B.EnvironmentID), &connectorv1.CompleteAuthorizationRequest{State: q.Get("state"), Code: q.Get("code")})
	code(t, err, codes.PermissionDenied, "invalid OAuth state")
	// A code presented with another authorisation's PKCE verifier is refused
	// by the destination.
	first := mustQuery(t, authorizeRedirect(t, startAuth()))
	second := mustQuery(t, authorizeRedirect(t, startAuth()))
	_, err = internal.CompleteAuthorization(ctx, &connectorv1.CompleteAuthorizationRequest{State: second.Get("state"), Code: first.Get("code")})
	code(t, err, codes.FailedPrecondition, "refused the authorisation code")

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
