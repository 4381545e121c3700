package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
)

func readyzOf(t *testing.T, g *testGateway) (int, readiness) {
	t.Helper()
	rec := g.serve("GET", "/readyz", "", nil, 0)
	var r readiness
	if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil {
		t.Fatalf("/readyz answered %d %q: %v", rec.Code, rec.Body, err)
	}
	return rec.Code, r
}

// /readyz reports each service with each of its dependencies; all ready is
// 200 "ready".
func TestReadyzPerServiceAndDependency(t *testing.T) {
	g := newTestGateway(t)
	code, r := readyzOf(t, g)
	if code != http.StatusOK || r.Status != "ready" {
		t.Fatalf("/readyz = %d %+v", code, r)
	}
	for _, svc := range []string{"admin", "connector", "segmentsync", "eventrelay", "targeting"} {
		s, ok := r.Services[svc]
		if !ok || s.Status != "SERVING" || s.Dependencies["database"] != "ok" || s.Dependencies["migrations"] != "ok" || s.Reason != "" {
			t.Fatalf("%s: %+v", svc, s)
		}
	}
}

// A dependency that fails makes /readyz 503, naming the service, the
// dependency and why; /healthz calls no dependency and stays 200.
func TestReadyzNamesFailingDependency(t *testing.T) {
	g := newTestGateway(t)
	g.env.Server.Ready.Add("targeting", "index", func(_ context.Context) error { return errIndexBehind })
	if err := g.env.P.DB.SQL().Close(); err != nil {
		t.Fatal(err)
	}
	code, r := readyzOf(t, g)
	if code != http.StatusServiceUnavailable || r.Status != "not ready" {
		t.Fatalf("/readyz = %d %+v, want 503 not ready", code, r)
	}
	tg := r.Services["targeting"]
	if tg.Status != "NOT_SERVING" || tg.Dependencies["index"] != errIndexBehind.Error() ||
		!strings.Contains(tg.Dependencies["database"], "does not answer") || !strings.Contains(tg.Reason, "index: "+errIndexBehind.Error()) {
		t.Fatalf("targeting: %+v", tg)
	}
	if c := r.Services["connector"]; c.Status != "NOT_SERVING" || c.Dependencies["index"] != "" || !strings.Contains(c.Reason, "database: ") {
		t.Fatalf("connector: %+v (the index is targeting's alone)", c)
	}
	if rec := g.serve("GET", "/healthz", "", nil, 0); rec.Code != http.StatusOK {
		t.Fatalf("/healthz = %d %s with the database down; it must not call dependencies", rec.Code, rec.Body)
	}
}

var errIndexBehind = errors.New("index not caught up with the membership feed for env_x (at sequence 3)")
