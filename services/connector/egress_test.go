package connector_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
	"github.com/seghub/seghub/pkg/config"
	"github.com/seghub/seghub/services/connector"
)

// A webhook URL the egress policy refuses is refused when the connection is
// created or its credentials replaced: InvalidArgument naming the field and
// the policy, nothing saved, nothing called. An allowed one is accepted.
func TestWebhookURLRefusedByEgressPolicy(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	hook := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer hook.Close()
	allowed := strings.TrimPrefix(hook.URL, "http://")
	e := apptest.New(t, apptest.Options{Configure: func(c *config.Config) { c.DestinationAllow = "hooks.corp.example," + allowed }})
	svc, err := connector.New(context.Background(), e.P)
	if err != nil {
		t.Fatal(err)
	}
	e.Add(svc)
	e.Start()
	c := connectorv1.NewConnectorServiceClient(e.Dial(e.A.Admin))
	ctx := apptest.Context(t, 30*time.Second)

	port := allowed[strings.LastIndex(allowed, ":")+1:]
	for _, tc := range []struct{ url, why string }{
		{"http://169.254.169.254/latest/meta-data/", "cloud metadata"},
		{"http://[fd00:ec2::254]/latest/meta-data/", "cloud metadata"},
		{"http://127.0.0.1:1/hook", "loopback"},
		{"http://localhost:" + port + "/hook", "loopback"}, // allowed as 127.0.0.1:port, not by name
		{"http://[::1]/hook", "loopback"},
		{"http://[::ffff:127.0.0.1]/hook", "loopback"},
		{"http://10.0.0.1/hook", "private"},
		{"http://192.168.0.10/hook", "private"},
		{"http://0.0.0.0:" + port + "/hook", "unspecified"},
		{"file:///etc/passwd", "http:// or https://"},
		{"gopher://hooks.example/", "http:// or https://"},
		{"https://user:pw@hooks.example/", "user name"},
	} {
		_, err := c.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "webhook", Name: "hook", Credentials: map[string]string{"url": tc.url}})
		code(t, err, codes.InvalidArgument, "credentials.url")
		if !strings.Contains(err.Error(), tc.why) {
			t.Errorf("create with %s: %v, want it to say %q", tc.url, err, tc.why)
		}
	}
	list, err := c.ListConnections(ctx, &connectorv1.ListConnectionsRequest{})
	if err != nil || len(list.GetConnections()) != 0 {
		t.Fatalf("connections after refusals = %v, %v; want none", list.GetConnections(), err)
	}

	ok, err := c.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "webhook", Name: "hook", Credentials: map[string]string{"url": hook.URL + "/hook"}})
	if err != nil {
		t.Fatalf("allowed host:port refused: %v", err)
	}
	if _, err := c.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "webhook", Name: "corp hook", Credentials: map[string]string{"url": "https://hooks.corp.example/x"}}); err != nil {
		t.Fatalf("allowed host name refused: %v", err)
	}
	id := ok.GetConnection().GetConnectionId()
	_, err = c.UpdateConnection(ctx, &connectorv1.UpdateConnectionRequest{ConnectionId: id, Credentials: map[string]string{"url": "http://169.254.169.254/latest/meta-data/iam/"}})
	code(t, err, codes.InvalidArgument, "credentials.url")
	g, err := c.GetConnection(ctx, &connectorv1.GetConnectionRequest{ConnectionId: id})
	if err != nil || g.GetConnection().GetAccount() != hook.URL+"/hook" {
		t.Fatalf("after a refused update the connection is %v (%v); want it unchanged", g.GetConnection(), err)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the webhook received %d requests while connections were saved", n)
	}
}
