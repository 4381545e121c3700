package gateway

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/seghub/seghub/web"
)

func TestConsoleRoutes(t *testing.T) {
	t.Parallel()
	dist := fstest.MapFS{
		"index.html":             {Data: []byte(`<!doctype html><script src="/assets/index-AbC123.js"></script>`)},
		"assets/index-AbC123.js": {Data: []byte(`console.log(1)`)},
		"robots.txt":             {Data: []byte("User-agent: *")},
	}
	h, err := console(dist)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, wantBody, wantCache string
		wantCode                  int
	}{
		{"/", "<!doctype html>", "no-cache", 200},
		{"/index.html", "<!doctype html>", "no-cache", 200},
		{"/segments/seg_123", "<!doctype html>", "no-cache", 200},
		{"/integrations/connections/conn_1", "<!doctype html>", "no-cache", 200},
		{"/assets/index-AbC123.js", "console.log(1)", "public, max-age=31536000, immutable", 200},
		{"/robots.txt", "User-agent", "no-cache", 200},
		{"/assets/index-Gone99.js", "", "", 404},
		{"/favicon.ico", "", "", 404},
		// The API's own paths are never answered with the console.
		{"/v1/nope", "", "", 404},
		{"/v1", "", "", 404},
		{"/webhooks/heap/x", "", "", 404},
		{"/oauth/callback", "", "", 404},
		{"/openapi.json", "", "", 404},
		{"/metrics", "", "", 404},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.path, nil))
		if rec.Code != tc.wantCode {
			t.Errorf("GET %s: %d, want %d", tc.path, rec.Code, tc.wantCode)
			continue
		}
		if tc.wantCode != 200 {
			if strings.Contains(rec.Body.String(), "<!doctype html>") {
				t.Errorf("GET %s: answered with the console", tc.path)
			}
			continue
		}
		if !strings.Contains(rec.Body.String(), tc.wantBody) {
			t.Errorf("GET %s: body %q lacks %q", tc.path, rec.Body.String(), tc.wantBody)
		}
		if got := rec.Header().Get("Cache-Control"); got != tc.wantCache {
			t.Errorf("GET %s: Cache-Control %q, want %q", tc.path, got, tc.wantCache)
		}
		if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || strings.Contains(csp, "unsafe") {
			t.Errorf("GET %s: Content-Security-Policy %q", tc.path, csp)
		}
	}
}

// The committed build is whole: index.html exists and every asset it names is
// embedded, so a binary built from a clean clone serves a working console.
func TestEmbeddedConsoleComplete(t *testing.T) {
	t.Parallel()
	h, err := console(web.Dist())
	if err != nil {
		t.Fatalf("embedded console: %v (run make web)", err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	index := rec.Body.String()
	refs := 0
	for _, part := range strings.Split(index, `"/assets/`)[1:] {
		name := "/assets/" + part[:strings.IndexByte(part, '"')]
		refs++
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, name, nil))
		if rec.Code != 200 {
			t.Errorf("index.html names %s, which answers %d", name, rec.Code)
		}
	}
	if refs == 0 {
		t.Fatalf("index.html names no assets:\n%s", index)
	}
}
