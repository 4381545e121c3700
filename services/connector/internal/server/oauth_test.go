package server

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/seghub/seghub/pkg/destinations"
)

// A token endpoint's refusal is described by its status and error fields,
// shortened; the rest of its body (which may carry anything) is not
// repeated into last_error or an answer.
func TestOAuthProblemRepeatsNoBody(t *testing.T) {
	t.Parallel()
	const marker = "MARKER_private_body"
	err := &oauth2.RetrieveError{Response: &http.Response{StatusCode: 400}, Body: []byte(`{"error":"invalid_grant","debug":"` + marker + `"}`),
		ErrorCode: "invalid_grant", ErrorDescription: strings.Repeat("refresh token revoked ", 20) + marker}
	got := oauthProblem(err)
	if strings.Contains(got, marker) || !strings.HasPrefix(got, "HTTP 400: invalid_grant (refresh token revoked") || len(got) > 2*destinations.MaxExcerpt+40 {
		t.Fatalf("oauthProblem = %q", got)
	}
	if got := oauthProblem(errors.New(`Post "http://10.0.0.1:9/oauth/token": dial tcp 10.0.0.1:9: connect: connection refused`)); strings.Contains(got, "10.0.0.1") {
		t.Fatalf("network failure described as %q: it names internals", got)
	}
}
