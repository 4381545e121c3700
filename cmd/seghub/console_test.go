package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/seghub/seghub/pkg/config"
	"github.com/seghub/seghub/services/destsim"
)

// The console is served at / by the real gateway, beside the API, which it
// never shadows.
func TestConsoleBesideAPI(t *testing.T) {
	r := start(t, t.TempDir(), nil)
	get := func(method, path string) (int, http.Header, string) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+r.httpAddr+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	for _, p := range []string{"/", "/segments/seg_1", "/integrations"} {
		code, h, body := get("GET", p)
		if code != 200 || !strings.Contains(body, `<div id="root">`) {
			t.Errorf("GET %s: %d %.80q, want the console", p, code, body)
		}
		if !strings.Contains(h.Get("Content-Security-Policy"), "default-src 'self'") || h.Get("Cache-Control") != "no-cache" {
			t.Errorf("GET %s: headers %v", p, h)
		}
	}
	for _, tc := range []struct {
		method, path string
		code         int
		contentType  string
	}{
		{"GET", "/v1/whoami", 401, "application/json"},
		{"GET", "/v1/no-such-route", 401, "application/json"}, // no key: refused before routing
		{"GET", "/openapi.json", 200, "application/json"},
		{"GET", "/healthz", 200, "application/json"},
		{"GET", "/metrics", 200, "text/plain"},
		{"POST", "/webhooks/heap/conn_missing", 0, ""},
		{"POST", "/segments", 405, ""},
	} {
		code, h, body := get(tc.method, tc.path)
		if strings.Contains(body, `<div id="root">`) {
			t.Errorf("%s %s: answered with the console", tc.method, tc.path)
		}
		if tc.code != 0 && code != tc.code {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, code, tc.code)
		}
		if tc.contentType != "" && !strings.HasPrefix(h.Get("Content-Type"), tc.contentType) {
			t.Errorf("%s %s: Content-Type %q", tc.method, tc.path, h.Get("Content-Type"))
		}
	}
}

// An OAuth connect started in the console ends back in the console: the
// callback page links to the new connection's console page.
func TestOAuthCallbackReturnsToConsole(t *testing.T) {
	srv := httptest.NewServer(destsim.New(destsim.DemoCredentials()))
	defer srv.Close()
	r := start(t, t.TempDir(), func(c *config.Config) { c.CommandBarURL = srv.URL })
	key := keyPattern.FindString(r.stdout.String())
	flow := r.startOAuth(t, key, `{"type":"commandbar","name":"CommandBar","account":"org-1"}`)
	code, html := flow.complete(t, flow.Browser)
	link := regexp.MustCompile(`href="(/integrations/connections/conn_[a-z0-9]+)"`).FindStringSubmatch(html)
	if code != 200 || link == nil {
		t.Fatalf("callback page links nowhere in the console: %d %s", code, html)
	}
	console, err := http.Get("http://" + r.httpAddr + link[1])
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(console.Body)
	console.Body.Close()
	if console.StatusCode != 200 || !strings.Contains(string(b), `<div id="root">`) {
		t.Fatalf("GET %s: %d, want the console", link[1], console.StatusCode)
	}
}
