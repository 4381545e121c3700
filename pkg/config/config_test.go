package config

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
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

func TestSizeLimits(t *testing.T) {
	t.Parallel()
	d := Defaults()
	if d.RESTMaxBody != 4<<20 || d.GRPCMaxMessage != 16<<20 || d.ReplaceMembersMaxBytes != 256<<20 || d.ReplaceMembersMaxIDs != 10_000_000 {
		t.Errorf("defaults: rest %d grpc %d replace %d bytes %d ids", d.RESTMaxBody, d.GRPCMaxMessage, d.ReplaceMembersMaxBytes, d.ReplaceMembersMaxIDs)
	}
	for _, src := range WebhookSources {
		if n := d.WebhookMaxBody[src]; n <= 0 || n >= d.GRPCMaxMessage {
			t.Errorf("webhook %s default %d: want positive and below the gRPC message limit %d", src, n, d.GRPCMaxMessage)
		}
	}
	env := map[string]string{"SEGHUB_REST_MAX_BODY": "512KiB", "SEGHUB_WEBHOOK_MAX_BODY": "heap=32MiB", "SEGHUB_GRPC_MAX_MESSAGE": "64MiB"}
	c, err := Load(nil, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.RESTMaxBody != 512<<10 {
		t.Errorf("rest-max-body = %d", c.RESTMaxBody)
	}
	if c.WebhookMaxBody["heap"] != 32<<20 || c.WebhookMaxBody["appcues"] != d.WebhookMaxBody["appcues"] {
		t.Errorf("webhook-max-body: %v (a source not named keeps its default)", c.WebhookMaxBody)
	}
	for name, v := range map[string]string{"SEGHUB_REST_MAX_BODY": "0", "SEGHUB_GRPC_MAX_MESSAGE": "4MB", "SEGHUB_WEBHOOK_MAX_BODY": "shopify=1MiB", "SEGHUB_REPLACE_MEMBERS_MAX_IDS": "-1"} {
		if _, err := Load(nil, func(k string) string {
			if k == name {
				return v
			}
			return ""
		}); err == nil {
			t.Errorf("%s=%s accepted", name, v)
		}
	}
	if _, err := Load(nil, func(k string) string {
		return map[string]string{"SEGHUB_WEBHOOK_MAX_BODY": "heap=16MiB", "SEGHUB_GRPC_MAX_MESSAGE": "16MiB"}[k]
	}); err == nil || !strings.Contains(err.Error(), "heap=16 MiB") {
		t.Errorf("a webhook limit that fills a whole gRPC message: %v, want refused", err)
	}
	if _, err := Load(nil, func(k string) string {
		return map[string]string{"SEGHUB_WEBHOOK_MAX_BODY": "heap=16MiB", "SEGHUB_GRPC_MAX_MESSAGE": "17MiB"}[k]
	}); err != nil {
		t.Errorf("raising both: %v", err)
	}
	if got := FormatSize(4 << 20); got != "4 MiB" {
		t.Errorf("FormatSize = %q", got)
	}
}

// Destination rates override the assumed ones per type; partitions are
// bounded.
func TestDestinationRatesAndPartitions(t *testing.T) {
	env := map[string]string{"SEGHUB_DESTINATION_RATES": "appcues=1200, analytics=60000", "SEGHUB_EVENT_PARTITIONS": "32"}
	c, err := Load(nil, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if pm, burst := c.DestinationRate("appcues", 600); pm != 1200 || burst != 200 {
		t.Errorf("appcues rate %d/min, burst %d; want 1200, 200", pm, burst)
	}
	if pm, burst := c.DestinationRate("commandbar", 600); pm != 600 || burst != 100 {
		t.Errorf("commandbar (not named) rate %d/min, burst %d; want its assumed 600, 100", pm, burst)
	}
	if c.EventPartitions != 32 {
		t.Errorf("event partitions %d", c.EventPartitions)
	}
	if d := Defaults(); d.EventPartitions != 16 || len(d.DestinationRates) != 0 {
		t.Errorf("defaults: %d partitions, rates %v", d.EventPartitions, d.DestinationRates)
	}
	for name, v := range map[string]string{"SEGHUB_DESTINATION_RATES": "appcues=fast", "SEGHUB_EVENT_PARTITIONS": "0"} {
		if _, err := Load(nil, func(k string) string {
			if k == name {
				return v
			}
			return ""
		}); err == nil {
			t.Errorf("%s=%s accepted", name, v)
		}
	}
}
