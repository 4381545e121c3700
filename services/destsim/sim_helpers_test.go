package destsim_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
)

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
