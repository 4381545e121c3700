package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/seghub/seghub/pkg/app/apptest"
	"github.com/seghub/seghub/pkg/config"
)

type lockedBuffer = apptest.LogBuffer

type running struct {
	grpcAddr, httpAddr string
	stdout, stderr     *lockedBuffer
	stop               func()
}

// start runs the all-in-one on dataDir until the returned stop is called.
func start(t *testing.T, dataDir string, configure func(*config.Config)) *running {
	t.Helper()
	cfg := config.Defaults()
	cfg.DataDir = dataDir
	cfg.GRPCAddr = "127.0.0.1:0"
	cfg.HTTPAddr = "127.0.0.1:0"
	// Tests' destinations listen on loopback, refused unless allowed; the
	// SSRF suite narrows this in configure.
	cfg.DestinationAllow = "127.0.0.0/8,::1"
	if configure != nil {
		configure(cfg)
	}
	r := &running{stdout: &lockedBuffer{}, stderr: &lockedBuffer{}}
	ready := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, cfg, "all", Hooks{Stdout: r.stdout, Stderr: r.stderr, Ready: func(g, h string) {
			r.grpcAddr, r.httpAddr = g, h
			close(ready)
		}})
	}()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("seghub exited before ready: %v\n%s", err, r.stderr)
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatal("seghub not ready in 60s")
	}
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("seghub stopped with %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("seghub did not stop within 30s of cancellation")
			}
		})
	}
	t.Cleanup(r.stop)
	return r
}

func (r *running) do(t *testing.T, method, path, key, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+r.httpAddr+path, strings.NewReader(body))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: not JSON: %s", method, path, raw)
		}
	}
	return resp.StatusCode, out
}

var keyPattern = regexp.MustCompile(`sghk_[0-9A-Za-z]{32}`)

// The "Done when", end to end on the embedded default.
func TestAllInOne(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir, nil)
	adminKey := keyPattern.FindString(r.stdout.String())
	if adminKey == "" {
		t.Fatalf("admin key not printed on first start:\n%s", r.stdout)
	}
	if strings.Contains(r.stderr.String(), adminKey) {
		t.Fatal("admin key written to the logs")
	}

	if code, _ := r.do(t, "GET", "/healthz", "", ""); code != 200 {
		t.Fatalf("/healthz = %d", code)
	}
	code, body := r.do(t, "GET", "/v1/environments", "", "")
	if code != 401 || !strings.Contains(body["message"].(string), "API key") {
		t.Fatalf("no key: %d %v", code, body)
	}
	code, body = r.do(t, "GET", "/v1/environments", adminKey, "")
	if code != 200 || len(body["environments"].([]any)) != 1 {
		t.Fatalf("admin key: %d %v", code, body)
	}
	code, body = r.do(t, "POST", "/v1/api-keys", adminKey, `{"name":"frontend","role":"ROLE_MEMBER"}`)
	if code != 200 {
		t.Fatalf("create member key: %d %v", code, body)
	}
	memberKey := body["secret"].(string)
	code, body = r.do(t, "GET", "/v1/api-keys", memberKey, "")
	if code != 403 || !strings.Contains(body["message"].(string), "admin key") {
		t.Fatalf("member on admin route: %d %v", code, body)
	}
	if code, _ := r.do(t, "GET", "/v1/whoami", memberKey, ""); code != 200 {
		t.Fatalf("member whoami: %d", code)
	}
	code, body = r.do(t, "POST", "/v1/api-keys", adminKey, `{"name":"","role":"ROLE_MEMBER"}`)
	if code != 400 || !strings.Contains(body["message"].(string), "name") {
		t.Fatalf("blank name: %d %v", code, body)
	}
	if code, _ := r.do(t, "GET", "/readyz", "", ""); code != 200 {
		t.Fatalf("/readyz = %d", code)
	}

	conn, err := grpc.NewClient(r.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hr, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("grpc health = %v, %v", hr, err)
	}

	req, _ := http.Get("http://" + r.httpAddr + "/openapi.json")
	spec, _ := io.ReadAll(req.Body)
	req.Body.Close()
	var doc struct {
		Paths map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(spec, &doc); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/v1/environments", "/v1/api-keys", "/v1/api-keys/{id}:revoke"} {
		if _, ok := doc.Paths[p]; !ok {
			t.Errorf("openapi lacks %s", p)
		}
	}
	req, _ = http.Get("http://" + r.httpAddr + "/metrics")
	metrics, _ := io.ReadAll(req.Body)
	req.Body.Close()
	if !regexp.MustCompile(`rpc_server_call_duration_seconds_count\{[^}]*rpc_method="seghub.admin.v1.AdminService/ListEnvironments"`).Match(metrics) {
		t.Fatalf("/metrics lacks gRPC request counts for ListEnvironments:\n%.2000s", metrics)
	}

	// A restart keeps keys and prints nothing new.
	r.stop()
	r2 := start(t, dir, nil)
	if keyPattern.MatchString(r2.stdout.String()) {
		t.Fatal("a key was printed again on restart")
	}
	if code, _ := r2.do(t, "GET", "/v1/whoami", memberKey, ""); code != 200 {
		t.Fatalf("member key after restart: %d", code)
	}
}

func TestAdminKeyFromEnvironment(t *testing.T) {
	r := start(t, t.TempDir(), func(c *config.Config) { c.AdminKey = "sghk_operator_chosen_key_0001" })
	if keyPattern.MatchString(r.stdout.String()) || strings.Contains(r.stdout.String(), "sghk_operator") {
		t.Fatalf("printed a key although SEGHUB_ADMIN_KEY was set:\n%s", r.stdout)
	}
	if code, _ := r.do(t, "GET", "/v1/api-keys", "sghk_operator_chosen_key_0001", ""); code != 200 {
		t.Fatalf("chosen admin key refused: %d", code)
	}
}
