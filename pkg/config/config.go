// Package config is the one place where seghub's settings are declared: each
// has a flag, a SEGHUB_* environment variable and a default. Flags win over
// the environment, which wins over defaults. docs/CONFIG.md is generated from
// the table below (`seghub config-doc`) and a test keeps them equal.
package config

import (
	"flag"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Config holds every setting of every seghub process.
type Config struct {
	GRPCAddr     string
	HTTPAddr     string
	DataDir      string
	DatabaseURL  string
	NATSURL      string
	AdminKey     string
	SecretKey    string
	InternalKey  string
	LogLevel     string
	LogFormat    string
	OTLPEndpoint string
	TraceSample  float64
	TLSCert      string
	TLSKey       string
	TLSCA        string
	Seed         bool
	// PprofAddr serves net/http/pprof (CPU profiles of the running server);
	// empty disables it.
	PprofAddr string

	// Split mode: where each service's gRPC listens (used by the gateway and by
	// services that call one another). Empty means "this process".
	AdminAddr       string
	ConnectorAddr   string
	SegmentSyncAddr string
	EventRelayAddr  string
	TargetingAddr   string

	// Destinations' base URLs; point them at services/destsim in tests and demos.
	AppcuesURL    string
	CommandBarURL string
	ABTastyURL    string
	AnalyticsURL  string
	DestSimAddr   string
	// DestinationAllow lists hosts, host:port pairs and CIDR ranges that
	// destinations may reach although they are loopback, private,
	// link-local or metadata addresses (comma-separated).
	DestinationAllow string

	// OAuth: where browsers come back to, and seghub's client registration
	// with each OAuth destination.
	PublicURL              string
	OAuthStateTTL          time.Duration
	SyncRunLease           time.Duration
	CommandBarClientID     string
	CommandBarClientSecret string
	// CommandBarRecurringLimit is how many recurring syncs the CommandBar
	// plan allows per environment (it depends on the plan).
	CommandBarRecurringLimit int
	// DestinationRates override destination types' rate limits (per
	// minute), as a destination plan allows.
	DestinationRates map[string]int

	// Event relay delivery.
	DeliveryMaxAttempts int
	DeliveryMaxAge      time.Duration
	// IdentityAttachMaxAttempts is how often an event's identity attach is
	// tried alone before the event is dead-lettered.
	IdentityAttachMaxAttempts int
	EventDedupWindow          time.Duration
	EventRetention            time.Duration
	BusNamespace              string
	// EventPartitions is how many partitions each environment's events are
	// spread over; eventrelay replicas share them.
	EventPartitions int

	// Size limits: every body, message and stream is bounded before it is
	// read or decoded.
	RESTMaxBody            int64
	WebhookMaxBody         map[string]int64
	GRPCMaxMessage         int64
	ReplaceMembersMaxIDs   int
	ReplaceMembersMaxBytes int64
}

// WebhookSources are the inbound webhook routes, /webhooks/<source>/...;
// each has its own body limit in WebhookMaxBody.
var WebhookSources = []string{"heap", "segment_webhook", "appcues", "commandbar"}

type setting struct {
	name, env, usage string
	def              string
	set              func(c *Config, v string) error
}

func str(p func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error { *p(c) = v; return nil }
}

// size parses a byte count: digits with an optional KiB, MiB or GiB suffix.
func size(p func(*Config) *int64) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := ParseSize(v)
		*p(c) = n
		return err
	}
}

// ParseSize reads a positive byte count such as 4194304, 512KiB, 4MiB or 1GiB.
func ParseSize(v string) (int64, error) {
	digits, mult := v, int64(1)
	for suffix, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if d, ok := strings.CutSuffix(v, suffix); ok {
			digits, mult = d, m
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(digits), 10, 64)
	if err != nil || n <= 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("%q: want a positive byte count such as 4194304, 512KiB or 4MiB", v)
	}
	return n * mult, nil
}

// FormatSize writes n the way ParseSize reads it, in the largest exact unit.
func FormatSize(n int64) string {
	for _, u := range []struct {
		name string
		m    int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.m && n%u.m == 0 {
			return strconv.FormatInt(n/u.m, 10) + " " + u.name
		}
	}
	return strconv.FormatInt(n, 10) + " bytes"
}

func duration(p func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		*p(c) = d
		return err
	}
}

var busNamespace = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// settings is the table; keep it sorted by topic, documented in one line each.
var settings = []setting{
	{"grpc-addr", "SEGHUB_GRPC_ADDR", "gRPC listen address", ":9090", str(func(c *Config) *string { return &c.GRPCAddr })},
	{"http-addr", "SEGHUB_HTTP_ADDR", "REST/JSON gateway listen address", ":8080", str(func(c *Config) *string { return &c.HTTPAddr })},
	{"data-dir", "SEGHUB_DATA_DIR", "directory for the embedded default's SQLite file, JetStream data and generated keys", "./data", str(func(c *Config) *string { return &c.DataDir })},
	{"database-url", "SEGHUB_DATABASE_URL", "postgres://... for PostgreSQL; empty means SQLite at <data-dir>/seghub.db", "", str(func(c *Config) *string { return &c.DatabaseURL })},
	{"nats-url", "SEGHUB_NATS_URL", "external NATS JetStream URL; empty starts an embedded server with data under <data-dir>/nats", "", str(func(c *Config) *string { return &c.NATSURL })},
	{"admin-key", "SEGHUB_ADMIN_KEY", "admin API key to create on first start instead of a random one", "", str(func(c *Config) *string { return &c.AdminKey })},
	{"secret-key", "SEGHUB_SECRET_KEY", "base64 32-byte AES-GCM key for credentials at rest; empty uses (and on first start creates, mode 0600) <data-dir>/secret.key", "", str(func(c *Config) *string { return &c.SecretKey })},
	{"internal-key", "SEGHUB_INTERNAL_KEY", "key seghub's services use to call one another, at least 32 bytes; empty uses (and creates) <data-dir>/internal.key. Split mode sends it with every internal call: without TLS (--tls-cert) only on a private network", "", func(c *Config, v string) error {
		if v != "" && len(v) < MinInternalKeyLength {
			return fmt.Errorf("must be at least %d bytes (it is %d): it authenticates every internal call; generate one with `openssl rand -base64 32`", MinInternalKeyLength, len(v))
		}
		c.InternalKey = v
		return nil
	}},
	{"log-level", "SEGHUB_LOG_LEVEL", "debug, info, warn or error", "info", str(func(c *Config) *string { return &c.LogLevel })},
	{"log-format", "SEGHUB_LOG_FORMAT", "json or text", "json", str(func(c *Config) *string { return &c.LogFormat })},
	{"otlp-endpoint", "SEGHUB_OTLP_ENDPOINT", "OTLP/gRPC collector for traces (host:port); empty keeps traces in-process", "", str(func(c *Config) *string { return &c.OTLPEndpoint })},
	{"trace-sample", "SEGHUB_TRACE_SAMPLE", "share of root traces sampled (0..1); requests that arrive with a sampled parent are always traced. Without --otlp-endpoint nothing exports spans, so requests start no traces of their own (background work such as sync runs still does)", "1", func(c *Config, v string) error {
		f, err := strconv.ParseFloat(v, 64)
		if err == nil && (f < 0 || f > 1) {
			err = fmt.Errorf("must be between 0 and 1")
		}
		c.TraceSample = f
		return err
	}},
	{"tls-cert", "SEGHUB_TLS_CERT", "PEM certificate: serve gRPC and REST over TLS", "", str(func(c *Config) *string { return &c.TLSCert })},
	{"tls-key", "SEGHUB_TLS_KEY", "PEM private key for --tls-cert", "", str(func(c *Config) *string { return &c.TLSKey })},
	{"tls-ca", "SEGHUB_TLS_CA", "PEM CA bundle that signs the other services' certificates in split mode (verified with their addresses' host names); empty trusts --tls-cert itself (one self-signed certificate shared by every service)", "", str(func(c *Config) *string { return &c.TLSCA })},
	{"pprof-addr", "SEGHUB_PPROF_ADDR", "serve Go profiles (net/http/pprof under /debug/pprof/) on this address for `go tool pprof`; empty disables. No authentication: bind it to loopback", "", str(func(c *Config) *string { return &c.PprofAddr })},
	{"seed", "SEGHUB_SEED", "seed demo data (segments, users, a simulator connection) on first start", "false", func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		c.Seed = b
		return err
	}},
	{"admin-addr", "SEGHUB_ADMIN_ADDR", "split mode: gRPC address of the admin service", "", str(func(c *Config) *string { return &c.AdminAddr })},
	{"connector-addr", "SEGHUB_CONNECTOR_ADDR", "split mode: gRPC address of the connector service", "", str(func(c *Config) *string { return &c.ConnectorAddr })},
	{"segmentsync-addr", "SEGHUB_SEGMENTSYNC_ADDR", "split mode: gRPC address of the segmentsync service", "", str(func(c *Config) *string { return &c.SegmentSyncAddr })},
	{"eventrelay-addr", "SEGHUB_EVENTRELAY_ADDR", "split mode: gRPC address of the eventrelay service", "", str(func(c *Config) *string { return &c.EventRelayAddr })},
	{"targeting-addr", "SEGHUB_TARGETING_ADDR", "split mode: gRPC address of the targeting service", "", str(func(c *Config) *string { return &c.TargetingAddr })},
	{"appcues-url", "SEGHUB_APPCUES_URL", "Appcues API base URL", "https://api.appcues.com", str(func(c *Config) *string { return &c.AppcuesURL })},
	{"commandbar-url", "SEGHUB_COMMANDBAR_URL", "CommandBar API base URL", "https://api.commandbar.com", str(func(c *Config) *string { return &c.CommandBarURL })},
	{"abtasty-url", "SEGHUB_ABTASTY_URL", "AB Tasty API base URL", "https://api.abtasty.com", str(func(c *Config) *string { return &c.ABTastyURL })},
	{"analytics-url", "SEGHUB_ANALYTICS_URL", "analytics track API base URL (Heap-style)", "https://heapanalytics.com", str(func(c *Config) *string { return &c.AnalyticsURL })},
	{"destsim-addr", "SEGHUB_DESTSIM_ADDR", "all-in-one demo: serve the destination simulator on this address and point every destination URL at it", "", str(func(c *Config) *string { return &c.DestSimAddr })},
	{"destination-allow", "SEGHUB_DESTINATION_ALLOW", "on-premises destinations: comma-separated hosts, host:port pairs or CIDR ranges that outbound requests may reach although loopback, private, link-local or metadata addresses are refused otherwise (the all-in-one adds the simulator's own address)", "", str(func(c *Config) *string { return &c.DestinationAllow })},
	{"public-url", "SEGHUB_PUBLIC_URL", "the gateway's public base URL; OAuth redirects come back to <public-url>/oauth/callback", "http://localhost:8080", str(func(c *Config) *string { return &c.PublicURL })},
	{"oauth-state-ttl", "SEGHUB_OAUTH_STATE_TTL", "OAuth: how long an authorisation may take from start to callback; the state and the browser's seghub_oauth cookie live this long", "10m", duration(func(c *Config) *time.Duration { return &c.OAuthStateTTL })},
	{"commandbar-client-id", "SEGHUB_COMMANDBAR_CLIENT_ID", "seghub's OAuth client id at CommandBar (the default matches the destination simulator)", "seghub", str(func(c *Config) *string { return &c.CommandBarClientID })},
	{"sync-run-lease", "SEGHUB_SYNC_RUN_LEASE", "syncs: how long a sync run's worker may go silent before another process takes the run over; a run cut off by a crash resumes about this long after it (renewed every fifth of it; at least 1s)", "10s", func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err == nil && d < time.Second {
			err = fmt.Errorf("must be at least 1s")
		}
		c.SyncRunLease = d
		return err
	}},
	{"commandbar-recurring-limit", "SEGHUB_COMMANDBAR_RECURRING_LIMIT", "syncs: most recurring segment syncs to CommandBar at a time per environment, as the CommandBar plan allows (one-time syncs are unlimited)", "10", func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err == nil && n < 1 {
			err = fmt.Errorf("must be at least 1")
		}
		c.CommandBarRecurringLimit = n
		return err
	}},
	{"destination-rates", "SEGHUB_DESTINATION_RATES", "syncs and event delivery: each connection's rate limit per destination type, as type=per-minute pairs overriding the assumed defaults (analytics counts events, the others requests; the bucket, shared by every process, holds a sixth of a minute's worth), e.g. appcues=1200 when your plan allows more", "", destinationRates},
	{"commandbar-client-secret", "SEGHUB_COMMANDBAR_CLIENT_SECRET", "seghub's OAuth client secret at CommandBar (the default matches the destination simulator)", "seghub-secret", str(func(c *Config) *string { return &c.CommandBarClientSecret })},
	{"delivery-max-attempts", "SEGHUB_DELIVERY_MAX_ATTEMPTS", "event delivery: attempts before an event may be dead-lettered", "10", func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		c.DeliveryMaxAttempts = n
		return err
	}},
	{"identity-attach-max-attempts", "SEGHUB_IDENTITY_ATTACH_MAX_ATTEMPTS", "identity attach: tries of one Appcues event's appcuesUserID alone (after its batch failed) before it may be dead-lettered as sink identity_attach (both this and --delivery-max-age must be passed; segmentsync being unavailable doesn't count)", "5", func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err == nil && n < 1 {
			err = fmt.Errorf("must be at least 1")
		}
		c.IdentityAttachMaxAttempts = n
		return err
	}},
	{"delivery-max-age", "SEGHUB_DELIVERY_MAX_AGE", "event delivery and identity attach: how long retries go on before an event may be dead-lettered (both limits must be passed)", "1h", duration(func(c *Config) *time.Duration { return &c.DeliveryMaxAge })},
	{"event-dedup-window", "SEGHUB_EVENT_DEDUP_WINDOW", "events: how long JetStream remembers event ids to drop duplicates (sinks' idempotency keys cover longer)", "2m", duration(func(c *Config) *time.Duration { return &c.EventDedupWindow })},
	{"bus-namespace", "SEGHUB_BUS_NAMESPACE", "events: prefix of the JetStream stream and subjects, so several deployments can share one NATS (letters, digits, '-', '_')", "seghub", func(c *Config, v string) error {
		if !busNamespace.MatchString(v) {
			return fmt.Errorf("%q: use 1-32 letters, digits, '-' or '_'", v)
		}
		c.BusNamespace = v
		return nil
	}},
	{"event-partitions", "SEGHUB_EVENT_PARTITIONS", "events: partitions of each environment's events by a hash of the user id; each is delivered by one eventrelay replica at a time (a lease), and the live replicas share them evenly, so delivery grows with replicas up to this many. Every replica must use the same value; changing it moves users to other partitions, so let the sinks drain first (1-1024)", "16", func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err == nil && (n < 1 || n > 1024) {
			err = fmt.Errorf("must be between 1 and 1024")
		}
		c.EventPartitions = n
		return err
	}},
	{"event-retention", "SEGHUB_EVENT_RETENTION", "events: how long the events stream keeps events", "168h", duration(func(c *Config) *time.Duration { return &c.EventRetention })},
	{"rest-max-body", "SEGHUB_REST_MAX_BODY", "limits: largest REST request body (/v1/...); larger bodies are refused 413 before they are decoded, and keyless requests 401 before their body is read", "4MiB", size(func(c *Config) *int64 { return &c.RESTMaxBody })},
	{"webhook-max-body", "SEGHUB_WEBHOOK_MAX_BODY", "limits: largest inbound webhook body per route /webhooks/<source>/..., as source=size pairs (sources not named keep their default); larger bodies are refused 413 (keep each below --grpc-max-message)", "heap=8MiB,segment_webhook=8MiB,appcues=2MiB,commandbar=2MiB", webhookMaxBody},
	{"grpc-max-message", "SEGHUB_GRPC_MAX_MESSAGE", "limits: largest gRPC message a server receives (and the gateway sends); larger ones are refused (REST: 413)", "16MiB", size(func(c *Config) *int64 { return &c.GRPCMaxMessage })},
	{"replace-members-max-ids", "SEGHUB_REPLACE_MEMBERS_MAX_IDS", "limits: most distinct user ids one ReplaceMembers stream may carry; over it the stream is refused and nothing is applied", "10000000", func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err == nil && n <= 0 {
			err = fmt.Errorf("must be positive")
		}
		c.ReplaceMembersMaxIDs = n
		return err
	}},
	{"replace-members-max-bytes", "SEGHUB_REPLACE_MEMBERS_MAX_BYTES", "limits: most bytes of user ids (duplicates included) one ReplaceMembers stream may carry; over it the stream is refused and nothing is applied", "256MiB", size(func(c *Config) *int64 { return &c.ReplaceMembersMaxBytes })},
}

// webhookMaxBody parses "source=size,..." over the limits already set, so a
// setting may name only the sources it changes.
func webhookMaxBody(c *Config, v string) error {
	if c.WebhookMaxBody == nil {
		c.WebhookMaxBody = map[string]int64{}
	}
	for _, pair := range strings.Split(v, ",") {
		src, sz, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok || !slices.Contains(WebhookSources, src) {
			return fmt.Errorf("%q: want source=size pairs for the sources %v", pair, WebhookSources)
		}
		n, err := ParseSize(sz)
		if err != nil {
			return fmt.Errorf("%s: %w", src, err)
		}
		c.WebhookMaxBody[src] = n
	}
	for _, src := range WebhookSources {
		if _, ok := c.WebhookMaxBody[src]; !ok {
			return fmt.Errorf("no limit for source %q (every one of %v needs one)", src, WebhookSources)
		}
	}
	return nil
}

func destinationRates(c *Config, v string) error {
	c.DestinationRates = map[string]int{}
	if strings.TrimSpace(v) == "" {
		return nil
	}
	for _, pair := range strings.Split(v, ",") {
		typ, rate, ok := strings.Cut(strings.TrimSpace(pair), "=")
		n, err := strconv.Atoi(rate)
		if !ok || typ == "" || err != nil || n < 1 {
			return fmt.Errorf("%q: want type=per-minute pairs, e.g. appcues=1200", pair)
		}
		c.DestinationRates[typ] = n
	}
	return nil
}

// MinInternalKeyLength is the shortest internal key accepted.
const MinInternalKeyLength = 32

// Defaults returns the configuration with every default applied.
func Defaults() *Config {
	c := &Config{}
	for _, s := range settings {
		if err := s.set(c, s.def); err != nil {
			panic(fmt.Sprintf("config default %s: %v", s.name, err))
		}
	}
	return c
}

// Load reads the environment (getenv) and then args as flags.
func Load(args []string, getenv func(string) string) (*Config, error) {
	c := Defaults()
	fs := flag.NewFlagSet("seghub", flag.ContinueOnError)
	vals := make(map[string]*string, len(settings))
	for _, s := range settings {
		v := s.def
		if e := getenv(s.env); e != "" {
			v = e
		}
		vals[s.name] = fs.String(s.name, v, s.usage+" ("+s.env+")")
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	for _, s := range settings {
		if err := s.set(c, *vals[s.name]); err != nil {
			return nil, fmt.Errorf("%s / %s = %q: %w", s.name, s.env, *vals[s.name], err)
		}
	}
	if err := c.checkLimits(); err != nil {
		return nil, err
	}
	return c, nil
}

// webhookEnvelope is room for the gRPC message that carries a webhook body
// to its service (connection id, signature, framing).
const webhookEnvelope = 64 << 10

// checkLimits refuses webhook limits the gRPC hop behind them would undo: a
// body the gateway accepts must fit in one gRPC message.
func (c *Config) checkLimits() error {
	for _, src := range WebhookSources {
		if n := c.WebhookMaxBody[src]; n+webhookEnvelope > c.GRPCMaxMessage {
			return fmt.Errorf("webhook-max-body %s=%s does not fit in a gRPC message of grpc-max-message=%s; keep it %s below, or raise SEGHUB_GRPC_MAX_MESSAGE",
				src, FormatSize(n), FormatSize(c.GRPCMaxMessage), FormatSize(webhookEnvelope))
		}
	}
	return nil
}

// SQLitePath is where the embedded default keeps its database.
func (c *Config) SQLitePath() string { return filepath.Join(c.DataDir, "seghub.db") }

// Doc renders the settings table as Markdown.
func Doc() string {
	var b strings.Builder
	b.WriteString("# seghub configuration\n\nGenerated by `go run ./cmd/seghub config-doc` from `pkg/config/config.go`. Every setting is a flag and a `SEGHUB_*` environment variable; flags win.\n\n")
	b.WriteString("| flag | environment | default | meaning |\n|---|---|---|---|\n")
	for _, s := range settings {
		def := s.def
		if def == "" {
			def = "(empty)"
		}
		fmt.Fprintf(&b, "| `--%s` | `%s` | `%s` | %s |\n", s.name, s.env, def, s.usage)
	}
	return b.String()
}

// EnvNames lists every SEGHUB_* variable seghub reads.
func EnvNames() []string {
	out := make([]string, len(settings))
	for i, s := range settings {
		out[i] = s.env
	}
	return out
}

// RecurringLimit returns how many recurring syncs to a destination type an
// environment may have at a time: the catalogue's, or the plan's where this
// deployment sets it.
func (c *Config) RecurringLimit(typ string, catalogue int) int {
	if typ == "commandbar" && c.CommandBarRecurringLimit > 0 {
		return c.CommandBarRecurringLimit
	}
	return catalogue
}

// DestinationRate is a connection's rate limit for destination type typ
// whose assumed limit is catalogue (per minute): the bucket refills perMinute
// tokens a minute and holds burst.
func (c *Config) DestinationRate(typ string, catalogue int) (perMinute, burst int) {
	perMinute = catalogue
	if n, ok := c.DestinationRates[typ]; ok {
		perMinute = n
	}
	return max(perMinute, 1), max(perMinute/6, 1)
}

// DestinationURL returns the configured API base URL of a destination type
// ("" for types whose URL is part of the connection, like webhooks).
func (c *Config) DestinationURL(typ string) string {
	switch typ {
	case "appcues":
		return c.AppcuesURL
	case "commandbar":
		return c.CommandBarURL
	case "abtasty":
		return c.ABTastyURL
	case "analytics":
		return c.AnalyticsURL
	}
	return ""
}
