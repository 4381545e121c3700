package destinations_test

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode"

	"github.com/seghub/seghub/pkg/destinations"
)

// A destination allowed by host:port that redirects to an address the
// policy refuses gets no further: the redirect target never receives a
// request, the failure is a refusal (not retried: retrying cannot help)
// and names the policy. A redirect within the allowed destination is followed.
func TestRedirectToRefusedAddressRefused(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { hits.Add(1) }))
	defer target.Close()
	for _, tc := range []struct{ name, location string }{
		{"loopback port not allowed", target.URL + "/api/track"},
		{"localhost", "http://localhost:" + port(t, target.URL) + "/api/track"},
		{"metadata", "http://169.254.169.254/latest/meta-data/"},
		{"private", "http://10.0.0.1/api/track"},
		{"IPv6 loopback", "http://[::1]:" + port(t, target.URL) + "/api/track"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rc := &recorder{replies: []func(http.ResponseWriter){status(http.StatusTemporaryRedirect, map[string]string{"Location": tc.location}, "")}}
			redirector := httptest.NewServer(rc)
			defer redirector.Close()
			eg, err := destinations.NewEgress(strings.TrimPrefix(redirector.URL, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			err = track(t, redirector.URL, destinations.Config{Egress: eg, MaxAttempts: 3, MaxBackoff: time.Millisecond})
			if !errors.As(err, new(*destinations.Error)) || destinations.KindOf(err) != destinations.Refused ||
				!strings.Contains(err.Error(), "refused by the egress policy") || !strings.Contains(err.Error(), destinations.AllowSetting) {
				t.Fatalf("err = %v, want a refusal naming the egress policy and %s", err, destinations.AllowSetting)
			}
			if at, _ := rc.requests(); len(at) != 1 {
				t.Fatalf("redirector saw %d requests, want 1 (a refusal is not retried)", len(at))
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the refused redirect target received %d requests", n)
	}
}

func TestRedirectWithinAllowedDestinationFollowed(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.HandleFunc("/api/track", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/v2/track", http.StatusPermanentRedirect)
	})
	mux.HandleFunc("/v2/track", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{}`)) })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	eg, err := destinations.NewEgress(strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	if err := track(t, srv.URL, destinations.Config{Egress: eg, MaxAttempts: 1}); err != nil {
		t.Fatalf("track through a same-host redirect: %v", err)
	}
}

// Without an allow list (the default policy) a destination on loopback is
// refused before any connection.
func TestDefaultPolicyRefusesLoopbackDestination(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer srv.Close()
	err := track(t, srv.URL, destinations.Config{Egress: destinations.DefaultEgress(), MaxAttempts: 3, MaxBackoff: time.Millisecond})
	if destinations.KindOf(err) != destinations.Refused || !strings.Contains(err.Error(), "loopback address 127.0.0.1") {
		t.Fatalf("err = %v, want refused as loopback", err)
	}
	if hits.Load() != 0 {
		t.Fatal("the loopback destination received a request")
	}
}

// What a failure repeats of a destination's answer is a short excerpt:
// at most MaxExcerpt bytes, no control characters, nothing past the cut.
func TestRemoteBodyExcerpt(t *testing.T) {
	t.Parallel()
	const marker = "sk_live_MARKER_never_repeated"
	body := "bad request:\x1b[31m\r\nline two\x00" + strings.Repeat("é", 120) + marker
	for _, code := range []int{400, 401, 429, 503} {
		rc := &recorder{replies: []func(http.ResponseWriter){status(code, nil, body)}}
		srv := httptest.NewServer(rc)
		err := track(t, srv.URL, destinations.Config{MaxAttempts: 1})
		srv.Close()
		var de *destinations.Error
		if !errors.As(err, &de) {
			t.Fatalf("HTTP %d: err = %v", code, err)
		}
		if strings.Contains(err.Error(), "MARKER") || len(de.Message) > len("credentials refused: ")+destinations.MaxExcerpt+len("…") {
			t.Errorf("HTTP %d: message repeats too much (%d bytes): %q", code, len(de.Message), de.Message)
		}
		if !strings.Contains(de.Message, "bad request: [31m line two éé") || !strings.HasSuffix(de.Message, "…") {
			t.Errorf("HTTP %d: message = %q, want the start of the answer, cleaned, marked as cut", code, de.Message)
		}
		for _, r := range de.Message {
			if unicode.IsControl(r) {
				t.Errorf("HTTP %d: control character %U in %q", code, r, de.Message)
			}
		}
	}
}

func TestExcerpt(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":                                  "",
		"  {\"error\":\"bad\"}\n":           `{"error":"bad"}`,
		"a\tb\r\nc\x00d\u202ee":             "a b c d e",
		"\xff\xfeok":                        "ok",
		strings.Repeat("x", 200):            strings.Repeat("x", 200),
		strings.Repeat("x", 201):            strings.Repeat("x", 200) + "…",
		strings.Repeat("x", 199) + "é":      strings.Repeat("x", 199) + "…",
		strings.Repeat("x", 199) + " y":     strings.Repeat("x", 199) + "…",
		strings.Repeat("x", 198) + "\n\ny":  strings.Repeat("x", 198) + " y",
		strings.Repeat("x", 198) + "\n\nyz": strings.Repeat("x", 198) + " y…",
	} {
		if got := destinations.Excerpt(in); got != want {
			t.Errorf("Excerpt(%q) = %q, want %q", in, got, want)
		}
	}
}

// A destination that cannot be reached is described without its
// internals: no address, no socket error text.
func TestNetworkFailureNamesNoInternals(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	err := track(t, url, destinations.Config{MaxAttempts: 1})
	if err == nil || strings.Contains(err.Error(), strings.TrimPrefix(url, "http://")) || strings.Contains(err.Error(), "dial tcp") {
		t.Fatalf("err = %v, want a description without the address or socket details", err)
	}
	if !strings.Contains(err.Error(), "refused the connection") {
		t.Fatalf("err = %v, want it to say the connection was refused", err)
	}
}

// TestMain makes any attempt to connect beyond this machine fail, so a
// policy bug cannot send traffic to a refused (or any remote) address.
func TestMain(m *testing.M) {
	destinations.HookDials(func(_, address string) error {
		host, _, err := net.SplitHostPort(address)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			panic("test dialled " + address + ": only loopback may be dialled")
		}
		return nil
	})
	os.Exit(m.Run())
}

func port(t *testing.T, u string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(strings.TrimPrefix(u, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}
