package config

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

func TestPrecedence(t *testing.T) {
	t.Parallel()
	env := map[string]string{"SEGHUB_GRPC_ADDR": ":7000", "SEGHUB_HTTP_ADDR": ":7001", "SEGHUB_DELIVERY_MAX_AGE": "2m"}
	c, err := Load([]string{"--http-addr", ":7002"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.GRPCAddr != ":7000" {
		t.Errorf("env not applied: %q", c.GRPCAddr)
	}
	if c.HTTPAddr != ":7002" {
		t.Errorf("flag does not win over env: %q", c.HTTPAddr)
	}
	if c.DataDir != "./data" {
		t.Errorf("default not applied: %q", c.DataDir)
	}
	if c.DeliveryMaxAge != 2*time.Minute {
		t.Errorf("duration: %v", c.DeliveryMaxAge)
	}
	if _, err := Load(nil, func(k string) string {
		if k == "SEGHUB_DELIVERY_MAX_ATTEMPTS" {
			return "many"
		}
		return ""
	}); err == nil {
		t.Error("bad number accepted")
	}
}

// The documentation is generated from the table; keep them equal.
func TestDocIsCurrent(t *testing.T) {
	t.Parallel()
	_, file, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(file), "..", "..", "docs", "CONFIG.md")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != Doc() {
		t.Fatal("docs/CONFIG.md is stale: run 'go run ./cmd/seghub config-doc > docs/CONFIG.md'")
	}
}
