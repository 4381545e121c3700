package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seghub/seghub/pkg/config"
	"github.com/seghub/seghub/pkg/destinations"
)

// trap is a loopback listener no destination request may ever reach: it
// counts every connection accepted, HTTP or not.
type trap struct {
	mu    sync.Mutex
	conns int
	port  string
}

func newTrap(t *testing.T, addr string) *trap {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil
	}
	tr := &trap{}
	_, tr.port, _ = net.SplitHostPort(l.Addr().String())
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			tr.mu.Lock()
			tr.conns++
			tr.mu.Unlock()
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close() })
	return tr
}

func (tr *trap) count() int {
	if tr == nil {
		return 0
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.conns
}

// dialGuard fails the test on any attempt to connect a destination beyond
// this machine (and stops it before it connects): blocked addresses must be
// refused before any dial, and this machine may not send traffic out.
type dialGuard struct {
	mu      sync.Mutex
	remote  []string
	dialled []string
}

func guardDials(t *testing.T) *dialGuard {
	g := &dialGuard{}
	restore := destinations.HookDials(func(_, address string) error {
		g.mu.Lock()
		defer g.mu.Unlock()
		host, _, err := net.SplitHostPort(address)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			g.remote = append(g.remote, address)
			return &net.AddrError{Err: "test: dial beyond loopback attempted", Addr: address}
		}
		g.dialled = append(g.dialled, address)
		return nil
	})
	t.Cleanup(func() {
		restore()
		g.mu.Lock()
		defer g.mu.Unlock()
		if len(g.remote) > 0 {
			t.Errorf("destination dials beyond loopback were attempted: %v", g.remote)
		}
	})
	return g
}

func (g *dialGuard) dialledPort(port string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, a := range g.dialled {
		if strings.HasSuffix(a, ":"+port) {
			return true
		}
	}
	return false
}

// Issue 16 point 3: for every destination type that takes a URL, URLs
// aimed at the metadata service, loopback (v4, v6, by name) and private
// addresses are refused when the connection is saved, and a destination on
// an allowed host that redirects to such an address is refused when it is
// called — on the all-in-one without the allow setting for any target. No
// target ever sees a connection; nothing is dialled beyond loopback.
func TestSSRFThroughDestinationURLs(t *testing.T) {
	guard := guardDials(t)
	v4 := newTrap(t, "127.0.0.1:0")
	if v4 == nil {
		t.Fatal("cannot listen on 127.0.0.1")
	}
	v6 := newTrap(t, "[::1]:"+v4.port) // same port on ::1 when the machine has IPv6 loopback
	if v6 == nil {
		v6 = newTrap(t, "[::1]:0")
	}
	v6port := v4.port
	if v6 != nil {
		v6port = v6.port
	}
	blocked := map[string]string{
		"metadata":             "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
		"metadata IPv6":        "http://[fd00:ec2::254]/latest/meta-data/",
		"loopback":             "http://127.0.0.1:" + v4.port + "/hook",
		"loopback IPv6":        "http://[::1]:" + v6port + "/hook",
		"loopback IPv4-mapped": "http://[::ffff:127.0.0.1]:" + v4.port + "/hook",
		"private":              "http://10.0.0.1/hook",
		"localhost":            "http://localhost:" + v4.port + "/hook",
		"unspecified":          "http://0.0.0.0:" + v4.port + "/hook",
	}
	redirects := http.NewServeMux()
	var redirected sync.Map
	for name, target := range blocked {
		redirects.HandleFunc("/to/"+strings.ReplaceAll(name, " ", "-"), func(w http.ResponseWriter, r *http.Request) {
			redirected.Store(name, true)
			http.Redirect(w, r, target, http.StatusTemporaryRedirect)
		})
	}
	redirector := httptest.NewServer(redirects)
	defer redirector.Close()
	r := start(t, t.TempDir(), func(c *config.Config) {
		// Only the redirecting destination is allowed, by host:port.
		c.DestinationAllow = strings.TrimPrefix(redirector.URL, "http://")
	})
	root := keyPattern.FindString(r.stdout.String())

	var types []destinations.Type
	for _, ty := range destinations.All() {
		if len(ty.URLFields()) > 0 {
			types = append(types, ty)
		}
	}
	if len(types) == 0 {
		t.Fatal("no destination type takes a URL: the catalogue changed, update this test")
	}

	// Members whose identity the destinations would receive.
	r.ok(t, "POST", "/v1/users:upsert", root, `{"users":[{"user_id":"u1","properties":{"hook_id":{"string_value":"h1"}}},{"user_id":"u2","properties":{"hook_id":{"string_value":"h2"}}}]}`)
	seg := field(r.ok(t, "POST", "/v1/segments", root, `{"name":"SSRF probe","visibility":"VISIBILITY_PUBLIC"}`), "segment", "segment_id")
	r.ok(t, "POST", "/v1/segments/"+seg+"/members:add", root, `{"user_ids":["u1","u2"]}`)

	for _, ty := range types {
		for _, f := range ty.URLFields() {
			creds := func(url string) string {
				var b strings.Builder
				for _, cf := range ty.CredentialFields {
					v := "probe"
					if cf == f {
						v = url
					}
					if b.Len() > 0 {
						b.WriteByte(',')
					}
					b.WriteString(`"` + cf + `":"` + v + `"`)
				}
				return `{` + b.String() + `}`
			}
			// Refused when saved: InvalidArgument on the field, naming why.
			for name, url := range blocked {
				code, out := r.do(t, "POST", "/v1/connections", root, `{"type":"`+ty.Name+`","name":"`+ty.Name+` `+name+`","credentials":`+creds(url)+`}`)
				msg, _ := out["message"].(string)
				if code != 400 || !strings.Contains(msg, "credentials."+f) || !strings.Contains(msg, "refused by the egress policy") || !strings.Contains(msg, destinations.AllowSetting) {
					t.Errorf("%s %s = %s: %d %v; want 400 naming credentials.%s, the policy and %s", ty.Name, f, url, code, out, f, destinations.AllowSetting)
				}
			}
			// Refused when called: an allowed destination redirecting to each.
			for name := range blocked {
				url := redirector.URL + "/to/" + strings.ReplaceAll(name, " ", "-")
				body := r.ok(t, "POST", "/v1/connections", root, `{"type":"`+ty.Name+`","name":"`+ty.Name+` redirect `+name+`","credentials":`+creds(url)+`,"settings":{"identity_property":"hook_id"}}`)
				conn := field(body, "connection", "connection_id")
				if !ty.SegmentsOut {
					t.Fatalf("%s takes a URL but no segments: extend this test to call it another way", ty.Name)
				}
				sync := field(r.ok(t, "POST", "/v1/syncs", root, `{"segment_id":"`+seg+`","connection_id":"`+conn+`","schedule":"SYNC_SCHEDULE_ONE_TIME"}`), "sync", "sync_id")
				var last map[string]any
				waitFor(t, 60*time.Second, func() bool {
					_, last = r.do(t, "GET", "/v1/syncs/"+sync, root, "")
					return field(last, "sync", "last_status") == "SYNC_RUN_STATUS_FAILED" || field(last, "sync", "last_status") == "SYNC_RUN_STATUS_SUCCEEDED"
				}, ty.Name+" sync through the redirect to "+name+" to finish")
				lastErr := field(last, "sync", "last_error")
				if field(last, "sync", "last_status") != "SYNC_RUN_STATUS_FAILED" || !strings.Contains(lastErr, "refused by the egress policy") || !strings.Contains(lastErr, destinations.AllowSetting) {
					t.Errorf("%s redirected to %s: sync = %v; want failed, naming the egress policy", ty.Name, name, last["sync"])
				}
				if _, ok := redirected.Load(name); !ok {
					t.Errorf("%s redirect to %s: the allowed destination was never called", ty.Name, name)
				}
			}
		}
	}
	if n := v4.count() + v6.count(); n != 0 {
		t.Errorf("the loopback trap accepted %d connections", n)
	}
	if guard.dialledPort(v4.port) || guard.dialledPort(v6port) {
		t.Errorf("a dial to the trap's port was attempted: %v", guard.dialled)
	}
}
