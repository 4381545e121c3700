package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/seghub/seghub/pkg/config"
	"github.com/seghub/seghub/services/destsim"
)

// oauthFlow is one OAuth flow driven like a browser: the REST start call
// sets the seghub_oauth cookie in the browser's jar, the simulator approves,
// and Callback is the gateway URL it redirected back to.
type oauthFlow struct {
	Browser  *http.Client
	Callback *url.URL
}

// startOAuth starts an OAuth flow through r's gateway with body (a
// StartAuthorization request) as an admin's browser.
func (r *running) startOAuth(t *testing.T, key, body string) *oauthFlow {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	f := &oauthFlow{Browser: &http.Client{Jar: jar}}
	req, _ := http.NewRequest("POST", "http://"+r.httpAddr+"/v1/connections:authorize", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := f.Browser.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var started struct {
		AuthorizeURL string `json:"authorize_url"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(raw, &started) != nil {
		t.Fatalf("authorize: %d %s", resp.StatusCode, raw)
	}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = noFollow.Get(started.AuthorizeURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	f.Callback, err = url.Parse(resp.Header.Get("Location"))
	if err != nil || f.Callback.Query().Get("code") == "" {
		t.Fatalf("simulator redirect: %q %v", resp.Header.Get("Location"), err)
	}
	f.Callback.Host = r.httpAddr // the public URL is not this test's listener
	return f
}

// complete opens the callback with client, returning status and page.
func (f *oauthFlow) complete(t *testing.T, client *http.Client) (int, string) {
	t.Helper()
	resp, err := client.Get(f.Callback.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	page, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(page)
}

// An OAuth callback completes only in the browser that started the flow:
// the same callback URL opened elsewhere (leaked through a referrer, a log,
// a shared link) is refused with a page that says why, and does not spoil
// the flow; a used state cannot be replayed even by its own browser.
func TestOAuthCallbackBoundToBrowser(t *testing.T) {
	sim := destsim.New(destsim.DemoCredentials())
	srv := httptest.NewServer(sim)
	defer srv.Close()
	r := start(t, t.TempDir(), func(c *config.Config) { c.CommandBarURL = srv.URL })
	defer r.stop()
	key := keyPattern.FindString(r.stdout.String())

	flow := r.startOAuth(t, key, `{"type":"commandbar","name":"CommandBar","account":"org-1"}`)
	other := r.startOAuth(t, key, `{"type":"commandbar","name":"CommandBar 2","account":"org-1"}`)
	if code, page := flow.complete(t, http.DefaultClient); code != 403 || !strings.Contains(page, "another browser") {
		t.Fatalf("callback without the cookie: %d %s", code, page)
	}
	if code, _ := flow.complete(t, other.Browser); code != 403 {
		t.Fatalf("callback with another browser's cookie: %d", code)
	}
	if code, page := flow.complete(t, flow.Browser); code != 200 || !strings.Contains(page, "Connected") {
		t.Fatalf("callback in the starting browser: %d %s", code, page)
	}
	if code, _ := flow.complete(t, flow.Browser); code == 200 {
		t.Fatal("a used state was accepted again")
	}
	// The account the token grants is checked: org-1 was asked and granted.
	code, body := r.do(t, "GET", "/v1/connections?type=commandbar", key, "")
	if conns, _ := body["connections"].([]any); code != 200 || len(conns) != 1 || conns[0].(map[string]any)["account"] != "org-1" {
		t.Fatalf("connections: %d %v", code, body)
	}
}
