package gateway

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"html/template"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
	"github.com/seghub/seghub/pkg/app"
)

var callbackPage = template.Must(template.New("cb").Parse(`<!doctype html><title>seghub</title>
{{if .Error}}<h1>Connection failed</h1><p>{{.Error}}</p><p><a href="/integrations">Back to Integrations</a></p>{{else}}<h1>Connected</h1><p>{{.Name}} ({{.Type}}) is connected. You can close this window.</p>
{{if .Secret}}<p>Webhook URL: <code>{{.Hook}}</code><br>Signing secret (shown only now): <code id="signing-secret">{{.Secret}}</code></p>{{end}}
<p><a id="open-connection" href="/integrations/connections/{{.ID}}">Open the connection in seghub</a></p>{{end}}`))

const (
	// oauthCookie binds an OAuth flow to the browser that started it: it
	// holds a nonce whose hash the connector keeps with the state.
	oauthCookie = "seghub_oauth"
	// browserMetadata is the connector's metadata key for that nonce
	// (services/connector/internal/server.BrowserMetadata).
	browserMetadata = "seghub-oauth-browser"
)

// browserNonceKey carries the nonce from startAuthorization to the gRPC
// call in the request's context, out of the caller's reach (no header).
type browserNonceKey struct{}

// browserNonceMetadata is the gateway's metadata annotator: the nonce
// startAuthorization chose, if any.
func browserNonceMetadata(ctx context.Context, r *http.Request) metadata.MD {
	if n, ok := r.Context().Value(browserNonceKey{}).(string); ok {
		return metadata.Pairs(browserMetadata, n)
	}
	return nil
}

// startAuthorization wraps the REST StartAuthorization call, the browser's
// way to start an OAuth flow: it binds the flow to a fresh nonce that it
// also sets as the seghub_oauth cookie (HttpOnly, so scripts cannot read it;
// SameSite=Lax, because the callback is a top-level cross-site navigation
// from the destination; Path=/oauth, the callback's path).
func (g *Gateway) startAuthorization(w http.ResponseWriter, r *http.Request) {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	nonce := base64.RawURLEncoding.EncodeToString(b)
	r = r.WithContext(context.WithValue(r.Context(), browserNonceKey{}, nonce))
	cookie := &http.Cookie{Name: oauthCookie, Value: nonce, Path: "/oauth", MaxAge: int(g.p.Config.OAuthStateTTL / time.Second),
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: secureRequest(r, g.p.Config.PublicURL)}
	g.gw.ServeHTTP(&cookieOnSuccess{ResponseWriter: w, cookie: cookie}, r)
}

// secureRequest reports whether the browser reached the gateway over TLS,
// directly or (by the public URL) through a terminating proxy.
func secureRequest(r *http.Request, publicURL string) bool {
	return r.TLS != nil || strings.HasPrefix(publicURL, "https://")
}

// cookieOnSuccess sets its cookie only on a successful answer: a refused
// start must not replace the cookie of a flow in progress.
type cookieOnSuccess struct {
	http.ResponseWriter
	cookie      *http.Cookie
	wroteHeader bool
}

func (c *cookieOnSuccess) WriteHeader(code int) {
	if !c.wroteHeader {
		c.wroteHeader = true
		if code < 300 {
			http.SetCookie(c.ResponseWriter, c.cookie)
		}
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *cookieOnSuccess) Write(b []byte) (int, error) {
	if !c.wroteHeader {
		c.WriteHeader(http.StatusOK)
	}
	return c.ResponseWriter.Write(b)
}

func (c *cookieOnSuccess) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// oauthCallback completes an OAuth authorisation: the destination redirects
// the browser here with code and state; the connector checks the state
// (single-use, unexpired, bound to the environment that started it and to
// this browser's seghub_oauth cookie) and PKCE.
func (g *Gateway) oauthCallback(w http.ResponseWriter, r *http.Request) {
	conn, err := g.p.Conn(app.Connector)
	if err != nil {
		http.Error(w, "connector unavailable", http.StatusServiceUnavailable)
		return
	}
	q := r.URL.Query()
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	if ck, err := r.Cookie(oauthCookie); err == nil {
		ctx = metadata.AppendToOutgoingContext(ctx, browserMetadata, ck.Value)
	}
	resp, err := connectorv1.NewConnectorServiceClient(conn).CompleteAuthorization(ctx, &connectorv1.CompleteAuthorizationRequest{State: q.Get("state"), Code: q.Get("code"), Error: q.Get("error")})
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err != nil {
		w.WriteHeader(runtimeStatus(err))
		_ = callbackPage.Execute(w, map[string]string{"Error": status.Convert(err).Message()})
		return
	}
	// The flow is over: its cookie goes with its state.
	http.SetCookie(w, &http.Cookie{Name: oauthCookie, Value: "", Path: "/oauth", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: secureRequest(r, g.p.Config.PublicURL)})
	// The tool's webhooks to seghub are signed with this secret; the callback
	// is the only place an OAuth connection can show it.
	c := resp.GetConnection()
	_ = callbackPage.Execute(w, map[string]string{"Name": c.GetName(), "Type": c.GetType(), "ID": c.GetConnectionId(), "Secret": resp.GetSigningSecret(),
		"Hook": g.p.Config.PublicURL + "/webhooks/" + c.GetType() + "/" + c.GetConnectionId()})
}
