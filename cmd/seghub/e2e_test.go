package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/seghub/seghub/pkg/store/storetest"
)

// split is seghub in split mode: one process per service on loopback, on a
// fresh PostgreSQL database and the external NATS JetStream.
type split struct {
	t        *testing.T
	bin      string
	env      []string
	addrs    map[string]string
	httpAddr string
	adminKey string
	procs    map[string]*exec.Cmd
	mu       sync.Mutex
	logs     map[string]*lockedBuffer
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// buildBinary builds ./cmd/seghub once per test binary.
var buildOnce = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "seghub-e2e-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "seghub")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

func natsURL(t *testing.T) string {
	u := os.Getenv("SEGHUB_TEST_NATS_URL")
	if u == "" {
		u = "nats://127.0.0.1:4222"
	}
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(u, "nats://"), 2*time.Second)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("external NATS at %s unreachable and CI=true requires it: %v", u, err)
		}
		t.Skipf("skipping split-mode test: external NATS at %s unreachable: %v", u, err)
	}
	c.Close()
	return u
}

func startSplit(t *testing.T, extraEnv ...string) *split {
	t.Helper()
	if testing.Short() {
		t.Skip("split mode builds and starts six processes; skipped with -short")
	}
	nurl := natsURL(t)
	dbURL := storetest.PostgresURL(t)
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	s := &split{t: t, bin: bin, addrs: map[string]string{}, procs: map[string]*exec.Cmd{}, logs: map[string]*lockedBuffer{}, adminKey: "sghk_e2e_admin_key_0123456789ab"}
	for _, svc := range roles[1:] {
		s.addrs[svc] = freeAddr(t)
	}
	s.httpAddr = freeAddr(t)
	s.env = append(os.Environ(),
		"SEGHUB_DATABASE_URL="+dbURL,
		"SEGHUB_NATS_URL="+nurl,
		"SEGHUB_SECRET_KEY="+base64.StdEncoding.EncodeToString(key),
		"SEGHUB_INTERNAL_KEY=internal-"+base64.RawURLEncoding.EncodeToString(key[:16]),
		"SEGHUB_ADMIN_KEY="+s.adminKey,
		"SEGHUB_ADMIN_ADDR="+s.addrs["gateway"],
		"SEGHUB_CONNECTOR_ADDR="+s.addrs["connector"],
		"SEGHUB_SEGMENTSYNC_ADDR="+s.addrs["segmentsync"],
		"SEGHUB_EVENTRELAY_ADDR="+s.addrs["eventrelay"],
		"SEGHUB_TARGETING_ADDR="+s.addrs["targeting"],
		"SEGHUB_HTTP_ADDR="+s.httpAddr,
		"SEGHUB_LOG_LEVEL=info",
	)
	s.env = append(s.env, extraEnv...)
	for _, svc := range roles[1:] {
		s.start(svc)
	}
	s.waitReady()
	t.Cleanup(s.stopAll)
	return s
}

func (s *split) start(svc string) {
	s.t.Helper()
	cmd := exec.Command(s.bin, "serve", svc)
	cmd.Env = append(append([]string(nil), s.env...), "SEGHUB_GRPC_ADDR="+s.addrs[svc], "SEGHUB_DATA_DIR="+filepath.Join(s.t.TempDir(), svc))
	buf := &lockedBuffer{}
	cmd.Stdout = buf
	cmd.Stderr = buf
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	s.procs[svc] = cmd
	s.logs[svc] = buf
	s.mu.Unlock()
}

// kill stops one service abruptly (SIGKILL), as a crash would.
func (s *split) kill(svc string) {
	s.mu.Lock()
	cmd := s.procs[svc]
	s.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_, _ = cmd.Process.Wait()
}

func (s *split) stopAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for svc, cmd := range s.procs {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _, _ = cmd.Process.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			s.t.Errorf("%s did not stop on SIGTERM within 20s", svc)
		}
		if s.t.Failed() {
			s.t.Logf("--- %s log (tail) ---\n%s", svc, tail(s.logs[svc].String(), 40))
		}
	}
}

func tail(s string, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (s *split) waitReady() {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		resp, err := http.Get("http://" + s.httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-ctx.Done():
			for svc, l := range s.logs {
				s.t.Logf("--- %s ---\n%s", svc, tail(l.String(), 20))
			}
			s.t.Fatal("split mode not ready within 60s")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// TestSplitModeStarts runs every service as its own process on PostgreSQL
// and external NATS, with the gateway routing REST to each.
func TestSplitModeStarts(t *testing.T) {
	s := startSplit(t)
	r := &running{httpAddr: s.httpAddr}
	if code, _ := r.do(t, "GET", "/v1/whoami", s.adminKey, ""); code != 200 {
		t.Fatalf("whoami through split gateway: %d", code)
	}
	if code, _ := r.do(t, "GET", "/v1/environments", "", ""); code != 401 {
		t.Fatalf("no key: %d", code)
	}
}
