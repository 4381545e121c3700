package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
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
		{"GET", "/v1/no-such-route", 404, ""},
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
