package gateway

import (
	"context"
	"html/template"
	"net/http"
	"time"

	"google.golang.org/grpc/status"

	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
	"github.com/seghub/seghub/pkg/app"
)

var callbackPage = template.Must(template.New("cb").Parse(`<!doctype html><title>seghub</title>
{{if .Error}}<h1>Connection failed</h1><p>{{.Error}}</p><p><a href="/integrations">Back to Integrations</a></p>{{else}}<h1>Connected</h1><p>{{.Name}} ({{.Type}}) is connected. You can close this window.</p>
{{if .Secret}}<p>Webhook URL: <code>{{.Hook}}</code><br>Signing secret (shown only now): <code id="signing-secret">{{.Secret}}</code></p>{{end}}
<p><a id="open-connection" href="/integrations/connections/{{.ID}}">Open the connection in seghub</a></p>{{end}}`))

// oauthCallback completes an OAuth authorisation: the destination redirects
// the browser here with code and state; the connector checks the state
// (single-use, unexpired, bound to the environment that started it) and PKCE.
func (g *Gateway) oauthCallback(w http.ResponseWriter, r *http.Request) {
	conn, err := g.p.Conn(app.Connector)
	if err != nil {
		http.Error(w, "connector unavailable", http.StatusServiceUnavailable)
		return
	}
	q := r.URL.Query()
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	resp, err := connectorv1.NewConnectorServiceClient(conn).CompleteAuthorization(ctx, &connectorv1.CompleteAuthorizationRequest{State: q.Get("state"), Code: q.Get("code"), Error: q.Get("error")})
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err != nil {
		w.WriteHeader(runtimeStatus(err))
		_ = callbackPage.Execute(w, map[string]string{"Error": status.Convert(err).Message()})
		return
	}
	// The tool's webhooks to seghub are signed with this secret; the callback
	// is the only place an OAuth connection can show it.
	c := resp.GetConnection()
	_ = callbackPage.Execute(w, map[string]string{"Name": c.GetName(), "Type": c.GetType(), "ID": c.GetConnectionId(), "Secret": resp.GetSigningSecret(),
		"Hook": g.p.Config.PublicURL + "/webhooks/" + c.GetType() + "/" + c.GetConnectionId()})
}
