package destsim_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/seghub/seghub/services/destsim"
)

// startSim serves a simulator with creds until the test ends.
func startSim(t *testing.T, creds destsim.Credentials) (*destsim.Sim, *httptest.Server) {
	t.Helper()
	sim := destsim.New(creds)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return sim, srv
}

// exchange sends one JSON request with header and returns the response with
// its body read.
func exchange(t *testing.T, method, u string, header map[string]string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// reply is a raw simulator answer.
type reply struct {
	status   int
	replayed bool
	body     string
}

func send(t *testing.T, method, u string, header map[string]string, body []byte) reply {
	t.Helper()
	resp, b := exchange(t, method, u, header, body)
	return reply{status: resp.StatusCode, replayed: resp.Header.Get("Idempotent-Replayed") == "true", body: string(b)}
}

// answer is a simulator reply: status, Retry-After and the JSON body.
type answer struct {
	status     int
	retryAfter string
	body       map[string]any
}

func post(t *testing.T, url string, header map[string]string, body []byte) answer {
	t.Helper()
	resp, b := exchange(t, "POST", url, header, body)
	a := answer{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
	_ = json.NewDecoder(bytes.NewReader(b)).Decode(&a.body)
	return a
}

func postJSON(t *testing.T, url string, header map[string]string, v any) answer {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return post(t, url, header, b)
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// tokenFor gets an access token by the client-credentials grant.
func tokenFor(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.PostForm(base+"/oauth/v2/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {"seghub"}, "client_secret": {"seghub-secret"}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.AccessToken == "" {
		t.Fatalf("token: %v", err)
	}
	return out.AccessToken
}

// bearer is an Authorization header value holding a fresh access token.
func bearer(t *testing.T, base string) string {
	t.Helper()
	return "Bearer " + tokenFor(t, base)
}
