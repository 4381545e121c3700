// Package destinations holds the destination catalogue and one adapter per
// destination API: segment delivery (add / remove identities for a segment
// under its frozen display name) and event delivery (track). Adapters know
// their batch size and rate limit, honour Retry-After, and classify failures
// as retryable, permanent or auth (needs re-authorisation).
package destinations

import (
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Auth is how a destination is connected.
type Auth int

const (
	AuthAPIKey Auth = iota + 1
	AuthOAuth2
	AuthClientCredentials
	AuthSigningSecret
)

// Type is one row of the catalogue.
type Type struct {
	Name, DisplayName string
	Auth              Auth
	SegmentsOut       bool
	EventsIn          bool
	EventsOut         bool
	SegmentsIn        bool
	DefaultInterval   time.Duration
	RecurringLimit    int
	BatchSize         int
	RatePerMinute     int
	Retention         time.Duration
	CredentialFields  []string
	DefaultIdentity   string
	// AccountField names the credential that identifies the account (shown).
	AccountField string
	// GrantedAccount names the field of an OAuth token response that says
	// which account the token grants; the same name, as an authorize URL
	// parameter, preselects the account the user asked for. Empty: the
	// destination does not say, and the account cannot be checked.
	GrantedAccount string
	// WholeTasks: the receiver applies a sync task only once all its pages
	// have arrived (the Heap partner format), so an acknowledged page is not
	// yet delivered.
	WholeTasks bool
	// PropertyPrefix is the default label before a segment's name in the
	// property the destination keeps per segment; empty: the type names no
	// such property and takes no prefix setting.
	PropertyPrefix string
}

// MaxPropertyPrefix bounds a property prefix, brackets included.
const MaxPropertyPrefix = 32

// ValidatePropertyPrefix checks a connection's property prefix: one
// bracketed label ("[Heap]"), as Heap's integration names its properties,
// with something printable inside and no bracket or control character that
// would make the destination's property name ambiguous.
func ValidatePropertyPrefix(p string) error {
	switch {
	case len(p) > MaxPropertyPrefix:
		return fmt.Errorf("property prefix %q is longer than %d characters", p, MaxPropertyPrefix)
	case !utf8.ValidString(p):
		return fmt.Errorf("property prefix is not valid UTF-8")
	case len(p) < 3 || p[0] != '[' || p[len(p)-1] != ']':
		return fmt.Errorf("property prefix %q must be one bracketed label, such as \"[Heap]\"", p)
	}
	inner := p[1 : len(p)-1]
	if strings.TrimSpace(inner) != inner || inner == "" {
		return fmt.Errorf("property prefix %q must not be blank or start or end with spaces inside its brackets", p)
	}
	for _, r := range inner {
		if unicode.IsControl(r) || r == '[' || r == ']' {
			return fmt.Errorf("property prefix %q holds %q; use one bracketed label of printable characters", p, r)
		}
	}
	return nil
}

// catalogue is the one table of what each destination is and allows.
// Rate limits not published by a destination are conservative assumptions,
// marked so.
var catalogue = []Type{
	{Name: "appcues", DisplayName: "Appcues", Auth: AuthAPIKey, SegmentsOut: true, EventsIn: true, EventsOut: true,
		DefaultInterval: time.Hour, RecurringLimit: 10, BatchSize: 1000, RatePerMinute: 600, // rate: assumed
		CredentialFields: []string{"account_id", "api_key", "api_secret"}, DefaultIdentity: "appcuesUserID", AccountField: "account_id",
		PropertyPrefix: "[seghub]"},
	{Name: "commandbar", DisplayName: "CommandBar", Auth: AuthOAuth2, SegmentsOut: true, EventsIn: true,
		DefaultInterval: 4 * time.Hour, RecurringLimit: 10, BatchSize: 500, RatePerMinute: 600, // rate and batch: assumed
		DefaultIdentity: "user_id", GrantedAccount: "org_id"},
	{Name: "abtasty", DisplayName: "AB Tasty", Auth: AuthClientCredentials, SegmentsOut: true,
		DefaultInterval: 24 * time.Hour, RecurringLimit: 10, BatchSize: 1000, RatePerMinute: 120, Retention: 30 * 24 * time.Hour, // rate: assumed
		CredentialFields: []string{"account_identifier", "client_id", "client_secret"}, DefaultIdentity: "ABTastyVisitorId", AccountField: "account_identifier"},
	{Name: "webhook", DisplayName: "Webhook", Auth: AuthSigningSecret, SegmentsOut: true, EventsIn: true,
		DefaultInterval: time.Hour, RecurringLimit: 10, BatchSize: 1000, RatePerMinute: 600,
		CredentialFields: []string{"url"}, DefaultIdentity: "user_id", AccountField: "url", WholeTasks: true},
	{Name: "analytics", DisplayName: "Analytics (Heap-style track API)", Auth: AuthAPIKey, EventsOut: true,
		BatchSize: 1000, RatePerMinute: 15000, // events, not requests: a track request costs one token per event
		CredentialFields: []string{"app_id"}, DefaultIdentity: "user_id", AccountField: "app_id"},
	{Name: "heap", DisplayName: "Heap (segments in)", Auth: AuthSigningSecret, SegmentsIn: true,
		DefaultIdentity: "user_id"},
	{Name: "segment_webhook", DisplayName: "Segment webhook (Heap format, segments in)", Auth: AuthSigningSecret, SegmentsIn: true,
		DefaultIdentity: "user_id"},
}

// Lookup returns a catalogue entry.
func Lookup(name string) (Type, bool) {
	for _, t := range catalogue {
		if t.Name == name {
			return t, true
		}
	}
	return Type{}, false
}

// All returns the catalogue.
func All() []Type { return append([]Type(nil), catalogue...) }

// URLFields names the credentials that are URLs seghub will call: the
// egress policy checks them when a connection is saved.
func (t Type) URLFields() []string {
	var out []string
	for _, f := range t.CredentialFields {
		if f == "url" || strings.HasSuffix(f, "_url") {
			out = append(out, f)
		}
	}
	return out
}

// ReceivesWebhooks reports whether connections of t get a signing secret for
// webhooks they send to seghub (events or segments in).
func (t Type) ReceivesWebhooks() bool {
	return t.EventsIn || t.SegmentsIn || t.Auth == AuthSigningSecret
}
