// Package destsim simulates the destinations seghub delivers to — Appcues,
// CommandBar, AB Tasty, a Heap-style analytics track API and webhooks — with
// their OAuth endpoints, documented limits and error answers, their
// idempotency (a repeated key replays the first answer, a key reused for
// other content is refused), webhook signature checks, in-memory state that
// tests inspect at /_sim/state, and injectable faults (a share of 429s with
// Retry-After, a share of 5xx, added latency, short token lifetimes).
package destsim

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Faults are injected into destination API calls (never into OAuth or
// /_sim endpoints). A faulted call changes no state.
type Faults struct {
	Rate429 float64 `json:"rate_429"`
	Rate5xx float64 `json:"rate_5xx"`
	// Rate401 refuses a share of calls' credentials (as a revoked key).
	Rate401    float64 `json:"rate_401"`
	LatencyMS  int     `json:"latency_ms"`
	RetryAfter int     `json:"retry_after_s"`
	// TokenTTL is the expires_in of issued access tokens, in seconds.
	TokenTTL int `json:"token_ttl_s"`
	// RefuseRefresh makes refresh_token grants fail (needs re-authorisation).
	RefuseRefresh bool `json:"refuse_refresh"`
	// RotateRefresh makes a refresh token single-use, as providers that
	// rotate refresh tokens do: the grant answers with the next one.
	RotateRefresh bool `json:"rotate_refresh"`
	// ErrorBody, when set, is the body of every injected fault (tests check
	// how much of a destination's answer seghub repeats).
	ErrorBody string `json:"error_body"`
}

// Credentials the simulator accepts.
type Credentials struct {
	// AppcuesAccounts: account id → "key:secret".
	AppcuesAccounts map[string]string
	// OAuthClients: client id → secret (CommandBar and AB Tasty).
	OAuthClients map[string]string
	// OAuthOrgs are the CommandBar organisations of the user who
	// authorises: on the consent screen they pick the one the authorize URL
	// preselects (org_id) if it is theirs, else their first. Empty: the
	// user belongs to every organisation.
	OAuthOrgs []string
	// WebhookSecrets: webhook path prefix → HMAC-SHA256 signing secret. The
	// longest prefix of a delivery's path decides ("/" covers every hook);
	// a path no prefix covers is accepted unsigned, as a receiver without a
	// configured secret would.
	WebhookSecrets map[string]string
}

// DemoCredentials are what `make run` and the tests use by default.
func DemoCredentials() Credentials {
	return Credentials{
		AppcuesAccounts: map[string]string{"demo": "demo-key:demo-secret"},
		OAuthClients:    map[string]string{"seghub": "seghub-secret"},
	}
}

// Limits the simulator enforces by default (documented ones, and assumed
// where marked); SetLimits changes them.
const (
	// Heap's bulk track: at most 1 000 events a request, 15 000 events a
	// minute per app_id and 1 000 events a minute per identity per app_id.
	AnalyticsMaxEvents            = 1000
	AnalyticsPerMinute            = 15000
	AnalyticsPerIdentityPerMinute = 1000
	// Heap's single-event track: 30 requests per 30 s per identity per
	// app_id.
	AnalyticsTrackPerIdentity       = 30
	AnalyticsTrackPerIdentityWindow = 30 * time.Second
	CommandBarMaxIdentify           = 500  // assumed
	AppcuesMaxImport                = 1000 // assumed
	// WebhookTolerance is how far a signed webhook's timestamp may be from
	// now before the delivery is refused as a replay.
	WebhookTolerance = 5 * time.Minute
)

// Limits override the enforced limits: a zero field keeps the default
// above, a negative one lifts the limit (a benchmark measures seghub, not a
// destination's quota).
type Limits struct {
	AnalyticsMaxEvents            int `json:"analytics_max_events"`
	AnalyticsPerMinute            int `json:"analytics_per_minute"`
	AnalyticsPerIdentityPerMinute int `json:"analytics_per_identity_per_minute"`
	AnalyticsTrackPerIdentity     int `json:"analytics_track_per_identity"`
	CommandBarMaxIdentify         int `json:"commandbar_max_identify"`
	AppcuesMaxImport              int `json:"appcues_max_import"`
	// IdempotencyKeys bounds each memory of keys (Idempotency-Key headers,
	// bulk-track event keys, webhook sync tasks).
	IdempotencyKeys int `json:"idempotency_keys"`
}

// resolved fills defaults in; afterwards a limit ≤ 0 means none.
func (l Limits) resolved() Limits {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&l.AnalyticsMaxEvents, AnalyticsMaxEvents)
	def(&l.AnalyticsPerMinute, AnalyticsPerMinute)
	def(&l.AnalyticsPerIdentityPerMinute, AnalyticsPerIdentityPerMinute)
	def(&l.AnalyticsTrackPerIdentity, AnalyticsTrackPerIdentity)
	def(&l.CommandBarMaxIdentify, CommandBarMaxIdentify)
	def(&l.AppcuesMaxImport, AppcuesMaxImport)
	def(&l.IdempotencyKeys, IdempotencyKeys)
	return l
}

var abtastyVisitor = regexp.MustCompile(`(?i)^[a-z0-9-]{1,32}$`)

// Sim is the simulator; it is an http.Handler.
type Sim struct {
	mux   *http.ServeMux
	creds Credentials

	mu     sync.Mutex
	faults Faults
	limits Limits // resolved
	rng    *rand.Rand
	state  State
	codes  map[string]oauthCode
	tokens map[string]time.Time // access token → expiry
	// refresh tokens → the grant they renew
	refresh map[string]grant
	// rate windows of the analytics limits, by quota key
	window map[string]window
	// keys: the first answer to each Idempotency-Key; events: the digest
	// of each bulk-track event by its idempotency_key; tasks: the webhook
	// sync tasks a Heap-format receiver has seen.
	keys   *keyCache[*remembered]
	events *keyCache[[32]byte]
	tasks  *keyCache[*webhookTask]
}

type oauthCode struct {
	client, redirect, challenge string
	org                         string
	expires                     time.Time
}

// grant is what a refresh token renews: the client's access to one
// organisation.
type grant struct{ client, org string }

// State is everything the destinations hold; GET /_sim/state returns it.
type State struct {
	// Appcues profiles: account → user → properties.
	Appcues map[string]map[string]map[string]any `json:"appcues"`
	// Appcues events: account → events.
	AppcuesEvents map[string][]map[string]any `json:"appcues_events"`
	// CommandBar users: org → user → properties.
	CommandBar map[string]map[string]map[string]any `json:"commandbar"`
	// AB Tasty segments: account → segment → visitor ids.
	ABTasty map[string]map[string]map[string]bool `json:"abtasty"`
	// Analytics events: app → events (duplicates by idempotency_key dropped).
	Analytics map[string][]map[string]any `json:"analytics"`
	// Analytics user properties: app → identity → properties.
	AnalyticsUsers map[string]map[string]map[string]any `json:"analytics_users"`
	// Webhook deliveries accepted, in arrival order.
	Webhooks []WebhookDelivery `json:"webhooks"`
	// Webhook segments: path → segment id → the membership that the
	// accepted segment.users.sync deliveries add up to.
	WebhookSegments map[string]map[string]*WebhookSegment `json:"webhook_segments"`
	// Counters: requests, injected_429, injected_5xx, rejected (refused
	// credentials or signatures), rate_limited, tokens_issued,
	// webhook_verified, webhook_bad_signature.
	Counters map[string]int `json:"counters"`
}

// WebhookDelivery is one accepted webhook.
type WebhookDelivery struct {
	Path      string          `json:"path"`
	Signature string          `json:"signature"`
	Body      json.RawMessage `json:"body"`
	// Verified is true when a secret covered the path and the signature
	// matched it (false: accepted unsigned).
	Verified bool `json:"verified"`
}

// WebhookSegment is one segment as a webhook receiver knows it.
type WebhookSegment struct {
	Name    string          `json:"name"`
	Members map[string]bool `json:"members"`
}

// New returns a simulator accepting creds.
func New(creds Credentials) *Sim {
	s := &Sim{mux: http.NewServeMux(), creds: creds, rng: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())), faults: Faults{TokenTTL: 3600, RetryAfter: 1}}
	s.limits = Limits{}.resolved()
	s.reset()
	m := s.mux
	m.HandleFunc("GET /oauth/authorize", s.authorize)
	m.HandleFunc("POST /oauth/token", s.token)
	m.HandleFunc("POST /oauth/v2/token", s.token)
	m.HandleFunc("GET /v2/accounts/{account}", s.api(s.appcuesAccount))
	m.HandleFunc("PATCH /v2/accounts/{account}/users/{user}/profile", s.api(s.appcuesProfile))
	// The endpoints the real APIs make idempotent by Idempotency-Key.
	m.HandleFunc("POST /v2/accounts/{account}/import/profiles", s.api(s.idempotent(s.appcuesImport)))
	m.HandleFunc("POST /v2/accounts/{account}/users/{user}/events", s.api(s.idempotent(s.appcuesEvent)))
	m.HandleFunc("POST /api/{org}/bulk-identify/", s.api(s.idempotent(s.commandbarIdentify)))
	m.HandleFunc("POST /accounts/{account}/segments/{segment}", s.api(s.idempotent(s.abtastySegment)))
	m.HandleFunc("POST /api/track", s.api(s.analyticsTrack))
	m.HandleFunc("POST /api/add_user_properties", s.api(s.analyticsUsers))
	m.HandleFunc("POST /hooks/", s.api(s.webhook))
	m.HandleFunc("GET /_sim/state", s.getState)
	m.HandleFunc("POST /_sim/faults", s.setFaults)
	m.HandleFunc("POST /_sim/limits", s.setLimits)
	m.HandleFunc("POST /_sim/reset", func(w http.ResponseWriter, _ *http.Request) {
		s.mu.Lock()
		s.reset()
		s.mu.Unlock()
		w.WriteHeader(204)
	})
	return s
}

func (s *Sim) reset() {
	s.state = State{Appcues: map[string]map[string]map[string]any{}, AppcuesEvents: map[string][]map[string]any{}, CommandBar: map[string]map[string]map[string]any{},
		ABTasty: map[string]map[string]map[string]bool{}, Analytics: map[string][]map[string]any{}, AnalyticsUsers: map[string]map[string]map[string]any{},
		WebhookSegments: map[string]map[string]*WebhookSegment{}, Counters: map[string]int{}}
	s.codes, s.tokens, s.refresh, s.window = map[string]oauthCode{}, map[string]time.Time{}, map[string]grant{}, map[string]window{}
	n := s.limits.IdempotencyKeys
	s.keys, s.events, s.tasks = newKeyCache[*remembered](n), newKeyCache[[32]byte](n), newKeyCache[*webhookTask](n)
}

// ServeHTTP implements http.Handler.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// SetCredentials replaces the credentials the simulator accepts (a key
// revoked at the destination).
func (s *Sim) SetCredentials(c Credentials) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.creds = c
}

// SetFaults replaces the injected faults.
func (s *Sim) SetFaults(f Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.TokenTTL == 0 {
		f.TokenTTL = 3600
	}
	s.faults = f
}

// SetLimits replaces the enforced limits.
func (s *Sim) SetLimits(l Limits) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limits = l.resolved()
	s.keys.max, s.events.max, s.tasks.max = s.limits.IdempotencyKeys, s.limits.IdempotencyKeys, s.limits.IdempotencyKeys
}

// ExpireTokens ends the life of every access token issued so far, as a
// destination revoking tokens before their announced expiry does.
func (s *Sim) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for tok := range s.tokens {
		s.tokens[tok] = time.Time{}
	}
}

// Snapshot returns a deep copy of the state.
func (s *Sim) Snapshot() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, _ := json.Marshal(s.state)
	var out State
	_ = json.Unmarshal(b, &out)
	return out
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Sim) getState(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, s.Snapshot()) }

func (s *Sim) setLimits(w http.ResponseWriter, r *http.Request) {
	var l Limits
	if err := json.NewDecoder(r.Body).Decode(&l); err != nil {
		writeJSON(w, 400, map[string]string{"error": err.Error()})
		return
	}
	s.SetLimits(l)
	w.WriteHeader(204)
}

func (s *Sim) setFaults(w http.ResponseWriter, r *http.Request) {
	var f Faults
	if err := json.NewDecoder(r.Body).Decode(&f); err != nil {
		writeJSON(w, 400, map[string]string{"error": err.Error()})
		return
	}
	s.SetFaults(f)
	w.WriteHeader(204)
}

// api wraps a destination endpoint with latency and fault injection; h runs
// under the simulator's lock.
func (s *Sim) api(h func(w http.ResponseWriter, r *http.Request, body []byte)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := readBody(r)
		if err != nil {
			writeJSON(w, 400, map[string]string{"error": "unreadable body"})
			return
		}
		s.mu.Lock()
		f := s.faults
		roll := s.rng.Float64()
		s.state.Counters["requests"]++
		s.mu.Unlock()
		if f.LatencyMS > 0 {
			time.Sleep(time.Duration(f.LatencyMS) * time.Millisecond)
		}
		fault := func(code int, msg string) {
			if f.ErrorBody == "" {
				writeJSON(w, code, map[string]string{"error": msg})
				return
			}
			w.WriteHeader(code)
			_, _ = io.WriteString(w, f.ErrorBody)
		}
		switch {
		case roll < f.Rate429:
			s.count("injected_429")
			w.Header().Set("Retry-After", strconv.Itoa(f.RetryAfter))
			fault(429, "Too Many Requests")
			return
		case roll < f.Rate429+f.Rate5xx:
			s.count("injected_5xx")
			fault(503, "Service Unavailable")
			return
		case roll < f.Rate429+f.Rate5xx+f.Rate401:
			s.count("injected_401")
			fault(401, "Unauthorized")
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		h(w, r, body)
	}
}

func (s *Sim) count(k string) {
	s.mu.Lock()
	s.state.Counters[k]++
	s.mu.Unlock()
}

func readBody(r *http.Request) ([]byte, error) {
	defer r.Body.Close()
	return io.ReadAll(io.LimitReader(r.Body, 64<<20))
}

// --- OAuth ---

func (s *Sim) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.mu.Lock()
	_, ok := s.creds.OAuthClients[q.Get("client_id")]
	s.mu.Unlock()
	if !ok || q.Get("response_type") != "code" {
		writeJSON(w, 400, map[string]string{"error": "invalid_request"})
		return
	}
	if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" {
		writeJSON(w, 400, map[string]string{"error": "invalid_request", "error_description": "PKCE S256 required"})
		return
	}
	code := randomToken("code")
	s.mu.Lock()
	s.codes[code] = oauthCode{client: q.Get("client_id"), redirect: q.Get("redirect_uri"), challenge: q.Get("code_challenge"), org: s.chooseOrg(q.Get("org_id")), expires: time.Now().Add(5 * time.Minute)}
	s.mu.Unlock()
	u, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || u.Scheme == "" {
		writeJSON(w, 400, map[string]string{"error": "invalid_request", "error_description": "redirect_uri"})
		return
	}
	rq := u.Query()
	rq.Set("code", code)
	rq.Set("state", q.Get("state"))
	u.RawQuery = rq.Encode()
	// The user "clicks Allow" at once.
	http.Redirect(w, r, u.String(), http.StatusFound)
}

// chooseOrg is the organisation the user picks on the consent screen.
func (s *Sim) chooseOrg(preselected string) string {
	orgs := s.creds.OAuthOrgs
	if len(orgs) == 0 {
		if preselected != "" {
			return preselected
		}
		return "org-1"
	}
	if slices.Contains(orgs, preselected) {
		return preselected
	}
	return orgs[0]
}

func randomToken(prefix string) string {
	return fmt.Sprintf("%s_%016x%016x", prefix, rand.Uint64(), rand.Uint64())
}

func (s *Sim) clientAuth(r *http.Request) (string, bool) {
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	want, known := s.creds.OAuthClients[id]
	return id, known && subtle.ConstantTimeCompare([]byte(want), []byte(secret)) == 1
}

func (s *Sim) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeJSON(w, 400, map[string]string{"error": "invalid_request"})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	client, ok := s.clientAuth(r)
	if !ok {
		writeJSON(w, 401, map[string]string{"error": "invalid_client"})
		return
	}
	// issue answers with an access token; a token granted by a user names
	// the organisation it grants (org_id), as the consent screen let the
	// user choose it.
	issue := func(g *grant) {
		s.state.Counters["tokens_issued"]++
		tok := randomToken("at")
		s.tokens[tok] = time.Now().Add(time.Duration(s.faults.TokenTTL) * time.Second)
		out := map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": s.faults.TokenTTL}
		if g != nil {
			rt := randomToken("rt")
			s.refresh[rt] = *g
			out["refresh_token"] = rt
			out["org_id"] = g.org
		}
		writeJSON(w, 200, out)
	}
	switch r.PostForm.Get("grant_type") {
	case "authorization_code":
		c, ok := s.codes[r.PostForm.Get("code")]
		delete(s.codes, r.PostForm.Get("code")) // single use
		if !ok || time.Now().After(c.expires) || c.client != client || c.redirect != r.PostForm.Get("redirect_uri") {
			writeJSON(w, 400, map[string]string{"error": "invalid_grant"})
			return
		}
		sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
		if base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge {
			writeJSON(w, 400, map[string]string{"error": "invalid_grant", "error_description": "PKCE verification failed"})
			return
		}
		issue(&grant{client: client, org: c.org})
	case "refresh_token":
		g, ok := s.refresh[r.PostForm.Get("refresh_token")]
		if s.faults.RefuseRefresh || !ok || g.client != client {
			writeJSON(w, 400, map[string]string{"error": "invalid_grant"})
			return
		}
		if s.faults.RotateRefresh {
			delete(s.refresh, r.PostForm.Get("refresh_token"))
		}
		issue(&g)
	case "client_credentials":
		issue(nil)
	default:
		writeJSON(w, 400, map[string]string{"error": "unsupported_grant_type"})
	}
}

func (s *Sim) bearerOK(r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	exp, known := s.tokens[tok]
	return ok && known && time.Now().Before(exp)
}

// --- Appcues ---

func (s *Sim) appcuesAuth(w http.ResponseWriter, r *http.Request) bool {
	key, secret, ok := r.BasicAuth()
	want, known := s.creds.AppcuesAccounts[r.PathValue("account")]
	if !ok || !known || subtle.ConstantTimeCompare([]byte(want), []byte(key+":"+secret)) != 1 {
		s.state.Counters["rejected"]++
		writeJSON(w, 401, map[string]string{"error": "Unauthorized", "message": "invalid API key or secret for this account"})
		return false
	}
	return true
}

func (s *Sim) appcuesAccount(w http.ResponseWriter, r *http.Request, _ []byte) {
	if s.appcuesAuth(w, r) {
		writeJSON(w, 200, map[string]string{"id": r.PathValue("account")})
	}
}

func (s *Sim) profile(account, user string) map[string]any {
	if s.state.Appcues[account] == nil {
		s.state.Appcues[account] = map[string]map[string]any{}
	}
	p := s.state.Appcues[account][user]
	if p == nil {
		p = map[string]any{}
		s.state.Appcues[account][user] = p
	}
	return p
}

func (s *Sim) appcuesProfile(w http.ResponseWriter, r *http.Request, body []byte) {
	if !s.appcuesAuth(w, r) {
		return
	}
	var props map[string]any
	if err := json.Unmarshal(body, &props); err != nil {
		writeJSON(w, 400, map[string]string{"error": "body must be a flat JSON object"})
		return
	}
	p := s.profile(r.PathValue("account"), r.PathValue("user"))
	for k, v := range props {
		p[k] = v
	}
	writeJSON(w, 200, p)
}

func (s *Sim) appcuesImport(w http.ResponseWriter, r *http.Request, body []byte) {
	if !s.appcuesAuth(w, r) {
		return
	}
	var in struct {
		Profiles []map[string]any `json:"profiles"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		writeJSON(w, 400, map[string]string{"error": "invalid JSON"})
		return
	}
	if limit := s.limits.AppcuesMaxImport; limit > 0 && len(in.Profiles) > limit {
		writeJSON(w, 413, map[string]string{"error": fmt.Sprintf("at most %d profiles per import", limit)})
		return
	}
	for _, prof := range in.Profiles {
		id, _ := prof["user_id"].(string)
		if id == "" {
			continue
		}
		p := s.profile(r.PathValue("account"), id)
		for k, v := range prof {
			if k != "user_id" {
				p[k] = v
			}
		}
	}
	writeJSON(w, 202, map[string]any{"accepted": len(in.Profiles)})
}

func (s *Sim) appcuesEvent(w http.ResponseWriter, r *http.Request, body []byte) {
	if !s.appcuesAuth(w, r) {
		return
	}
	var ev map[string]any
	if err := json.Unmarshal(body, &ev); err != nil || ev["name"] == nil {
		writeJSON(w, 400, map[string]string{"error": "events need a name"})
		return
	}
	ev["user_id"] = r.PathValue("user")
	acct := r.PathValue("account")
	s.state.AppcuesEvents[acct] = append(s.state.AppcuesEvents[acct], ev)
	writeJSON(w, 200, map[string]string{"status": "ok"})
}

// --- CommandBar ---

func (s *Sim) commandbarIdentify(w http.ResponseWriter, r *http.Request, body []byte) {
	if !s.bearerOK(r) {
		s.state.Counters["rejected"]++
		writeJSON(w, 401, map[string]string{"detail": "Authentication credentials were not provided or expired."})
		return
	}
	var rows []struct {
		ID         string         `json:"id"`
		Properties map[string]any `json:"properties"`
	}
	if err := json.Unmarshal(body, &rows); err != nil {
		writeJSON(w, 400, map[string]string{"detail": "expected a JSON array of {id, properties}"})
		return
	}
	if limit := s.limits.CommandBarMaxIdentify; limit > 0 && len(rows) > limit {
		writeJSON(w, 400, map[string]string{"detail": fmt.Sprintf("at most %d users per request", limit)})
		return
	}
	org := r.PathValue("org")
	if s.state.CommandBar[org] == nil {
		s.state.CommandBar[org] = map[string]map[string]any{}
	}
	for _, row := range rows {
		u := s.state.CommandBar[org][row.ID]
		if u == nil {
			u = map[string]any{}
			s.state.CommandBar[org][row.ID] = u
		}
		for k, v := range row.Properties {
			u[k] = v
		}
	}
	writeJSON(w, 200, map[string]int{"identified": len(rows)})
}

// --- AB Tasty ---

func (s *Sim) abtastySegment(w http.ResponseWriter, r *http.Request, body []byte) {
	if !s.bearerOK(r) {
		s.state.Counters["rejected"]++
		writeJSON(w, 401, map[string]string{"error": "invalid_token"})
		return
	}
	var rows []struct {
		VisitorID string `json:"visitor_id"`
		Value     any    `json:"value"`
	}
	if err := json.Unmarshal(body, &rows); err != nil {
		writeJSON(w, 400, map[string]string{"error": "expected rows of {visitor_id, value}"})
		return
	}
	var bad []string
	for _, row := range rows {
		if !abtastyVisitor.MatchString(row.VisitorID) {
			bad = append(bad, row.VisitorID)
		}
	}
	if len(bad) > 0 {
		writeJSON(w, 400, map[string]any{"error": "invalid visitor_id", "visitor_ids": bad})
		return
	}
	acct, seg := r.PathValue("account"), r.PathValue("segment")
	if s.state.ABTasty[acct] == nil {
		s.state.ABTasty[acct] = map[string]map[string]bool{}
	}
	if s.state.ABTasty[acct][seg] == nil {
		s.state.ABTasty[acct][seg] = map[string]bool{}
	}
	for _, row := range rows {
		id := strings.ToLower(row.VisitorID)
		if row.Value == false {
			delete(s.state.ABTasty[acct][seg], id)
		} else {
			s.state.ABTasty[acct][seg][id] = true
		}
	}
	writeJSON(w, 200, map[string]int{"rows": len(rows)})
}

// --- Analytics ---

// analyticsTrack takes Heap's bulk form {app_id, events: [...]} and its
// single-event form {app_id, identity, event, timestamp, properties,
// idempotency_key}. A request over any limit is refused whole.
func (s *Sim) analyticsTrack(w http.ResponseWriter, _ *http.Request, body []byte) {
	var in struct {
		AppID  string           `json:"app_id"`
		Events []map[string]any `json:"events"`
		// The single-event form.
		Identity string `json:"identity"`
		Event    string `json:"event"`
	}
	if err := json.Unmarshal(body, &in); err != nil || in.AppID == "" || (in.Events == nil && in.Event == "") {
		writeJSON(w, 400, map[string]string{"error": "app_id and events are required"})
		return
	}
	now, lim := time.Now(), s.limits
	var quotas []quota
	events := in.Events
	if events == nil {
		if in.Identity == "" {
			writeJSON(w, 400, map[string]string{"error": "identity is required"})
			return
		}
		var ev map[string]any
		_ = json.Unmarshal(body, &ev)
		delete(ev, "app_id")
		events = []map[string]any{ev}
		quotas = append(quotas, quota{key: "track:" + in.AppID + "\x00" + in.Identity, n: 1, limit: lim.AnalyticsTrackPerIdentity, period: AnalyticsTrackPerIdentityWindow,
			what: fmt.Sprintf("%d requests per %v per identity", lim.AnalyticsTrackPerIdentity, AnalyticsTrackPerIdentityWindow)})
	} else {
		if lim.AnalyticsMaxEvents > 0 && len(events) > lim.AnalyticsMaxEvents {
			writeJSON(w, 400, map[string]string{"error": fmt.Sprintf("at most %d events per request, got %d", lim.AnalyticsMaxEvents, len(events))})
			return
		}
		perIdentity := map[string]int{}
		for _, ev := range events {
			id, _ := ev["identity"].(string)
			perIdentity[id]++
		}
		for id, n := range perIdentity {
			quotas = append(quotas, quota{key: "identity:" + in.AppID + "\x00" + id, n: n, limit: lim.AnalyticsPerIdentityPerMinute, period: time.Minute,
				what: fmt.Sprintf("%d events per minute per identity", lim.AnalyticsPerIdentityPerMinute)})
		}
	}
	quotas = append(quotas, quota{key: "app:" + in.AppID, n: len(events), limit: lim.AnalyticsPerMinute, period: time.Minute,
		what: fmt.Sprintf("%d events per minute per app", lim.AnalyticsPerMinute)})
	// An idempotency_key names one event: a repeat of the same event is
	// dropped, another event under a used key refuses the request.
	digests := make([][32]byte, len(events))
	for i, ev := range events {
		key, _ := ev["idempotency_key"].(string)
		if key == "" {
			continue
		}
		digests[i] = eventDigest(ev)
		if first, ok := s.events.get(in.AppID + "\x00" + key); ok && first != digests[i] {
			s.state.Counters["idempotency_conflicts"]++
			writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"error": fmt.Sprintf("idempotency_key %q was first used for a different event; a key names one exact event", key)})
			return
		}
	}
	if wait, what := s.admit(now, quotas); wait > 0 {
		s.state.Counters["rate_limited"]++
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(wait.Seconds())))))
		writeJSON(w, 429, map[string]string{"error": "rate limit: " + what})
		return
	}
	for i, ev := range events {
		key, _ := ev["idempotency_key"].(string)
		if key != "" {
			if _, dup := s.events.get(in.AppID + "\x00" + key); dup {
				s.state.Counters["idempotent_replays"]++
				continue
			}
			s.events.put(in.AppID+"\x00"+key, digests[i])
		}
		s.state.Analytics[in.AppID] = append(s.state.Analytics[in.AppID], ev)
	}
	writeJSON(w, 200, map[string]int{"accepted": len(events)})
}

// hit is n units of a quota used at one instant.
type hit struct {
	at time.Time
	n  int
}

// window is a quota's hits within its sliding period, oldest first.
type window []hit

func (w window) pruned(now time.Time, period time.Duration) window {
	i := 0
	for i < len(w) && now.Sub(w[i].at) >= period {
		i++
	}
	return w[i:]
}

// wait returns how long until n more units fit under limit (0: now).
func (w window) wait(now time.Time, period time.Duration, limit, n int) time.Duration {
	excess := n - limit
	for _, h := range w {
		excess += h.n
	}
	for _, h := range w {
		if excess <= 0 {
			break
		}
		excess -= h.n
		if excess <= 0 {
			return h.at.Add(period).Sub(now)
		}
	}
	if excess > 0 {
		return period
	}
	return 0
}

// quota is one limit a request draws n units from.
type quota struct {
	key, what string
	n, limit  int
	period    time.Duration
}

// admit records the request against every quota, or against none when one
// is exhausted, in which case it returns how long to wait and which limit.
func (s *Sim) admit(now time.Time, quotas []quota) (time.Duration, string) {
	for _, q := range quotas {
		if q.limit <= 0 {
			continue // lifted
		}
		w := s.window[q.key].pruned(now, q.period)
		if len(w) == 0 {
			delete(s.window, q.key) // identities seen once do not accumulate
		} else {
			s.window[q.key] = w
		}
		if d := w.wait(now, q.period, q.limit, q.n); d > 0 {
			return d, q.what
		}
	}
	for _, q := range quotas {
		if q.n > 0 && q.limit > 0 {
			s.window[q.key] = append(s.window[q.key], hit{at: now, n: q.n})
		}
	}
	return 0, ""
}

func (s *Sim) analyticsUsers(w http.ResponseWriter, _ *http.Request, body []byte) {
	var in struct {
		AppID string `json:"app_id"`
		Users []struct {
			Identity   string         `json:"identity"`
			Properties map[string]any `json:"properties"`
		} `json:"users"`
	}
	if err := json.Unmarshal(body, &in); err != nil || in.AppID == "" {
		writeJSON(w, 400, map[string]string{"error": "app_id and users are required"})
		return
	}
	if s.state.AnalyticsUsers[in.AppID] == nil {
		s.state.AnalyticsUsers[in.AppID] = map[string]map[string]any{}
	}
	for _, u := range in.Users {
		p := s.state.AnalyticsUsers[in.AppID][u.Identity]
		if p == nil {
			p = map[string]any{}
			s.state.AnalyticsUsers[in.AppID][u.Identity] = p
		}
		for k, v := range u.Properties {
			p[k] = v
		}
	}
	writeJSON(w, 200, map[string]int{"users": len(in.Users)})
}

// --- Webhooks ---

// webhookSecret returns the secret of the longest configured prefix of path.
func (s *Sim) webhookSecret(path string) (string, bool) {
	best, secret, found := -1, "", false
	for prefix, sec := range s.creds.WebhookSecrets {
		if strings.HasPrefix(path, prefix) && len(prefix) > best {
			best, secret, found = len(prefix), sec, true
		}
	}
	return secret, found
}

// checkSignature verifies a "ts:<unix>,hmac:<hex>" header, the HMAC-SHA256
// of the timestamp's digits followed by the raw body, as a receiver would
// (written apart from pkg/destinations' Sign so that it checks the format,
// not the same code twice). It returns why the signature is refused, or "".
func checkSignature(secret, header string, body []byte, now time.Time) string {
	if header == "" {
		return "missing X-Seghub-Signature header"
	}
	var ts, mac string
	for _, part := range strings.Split(header, ",") {
		switch k, v, _ := strings.Cut(strings.TrimSpace(part), ":"); k {
		case "ts":
			ts = v
		case "hmac":
			mac = v
		}
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	got, herr := hex.DecodeString(mac)
	if err != nil || herr != nil || len(got) != sha256.Size {
		return "malformed X-Seghub-Signature header, want ts:<unix>,hmac:<hex>"
	}
	if d := now.Sub(time.Unix(unix, 0)); d > WebhookTolerance || d < -WebhookTolerance {
		return fmt.Sprintf("signature timestamp outside the %v tolerance", WebhookTolerance)
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write(body)
	if !hmac.Equal(got, m.Sum(nil)) {
		return "signature does not match the body"
	}
	return ""
}

// webhookBody is the segment.users.sync payload seghub's webhook adapter
// sends (other action types, such as a ping, carry no membership).
type webhookBody struct {
	ActionType string `json:"action_type"`
	Data       struct {
		Segment struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"segment"`
		SyncInfo struct {
			Page   int    `json:"page_number"`
			Total  int    `json:"total_pages"`
			TaskID string `json:"sync_task_id"`
		} `json:"sync_info"`
		Add    []webhookUser `json:"add"`
		Remove []webhookUser `json:"remove"`
	} `json:"data"`
}

// webhookTask is a sync task as a Heap-format receiver tracks it: the page
// total it was announced with, the digest of each page received, and the
// pages held until the last one arrives (a task is applied whole, in page
// order, as Heap's partner format and seghub's own inbound receiver do).
type webhookTask struct {
	total int
	pages map[int][32]byte
	held  map[int]*webhookBody
}

// taskPage checks a page against its sync task, as a receiver that puts a
// task's pages together must: one task has one page total, and a page
// number names one content. It returns the refusal ("" to accept) and
// whether the page repeats one already received.
func (s *Sim) taskPage(path string, in *webhookBody, body []byte) (refusal string, repeat bool) {
	info := in.Data.SyncInfo
	if info.TaskID == "" {
		return "", false // not part of a task (a single delivery)
	}
	if info.Total < 1 || info.Page < 1 || info.Page > info.Total {
		return fmt.Sprintf("sync task %s: page_number %d of total_pages %d is out of range", info.TaskID, info.Page, info.Total), false
	}
	key := path + "\x00" + info.TaskID
	task, ok := s.tasks.get(key)
	if !ok {
		task = &webhookTask{total: info.Total, pages: map[int][32]byte{}, held: map[int]*webhookBody{}}
		s.tasks.put(key, task)
	}
	if task.total != info.Total {
		return fmt.Sprintf("sync task %s was announced with %d pages; this page says %d", info.TaskID, task.total, info.Total), false
	}
	digest := sha256.Sum256(body)
	if first, seen := task.pages[info.Page]; seen {
		if first != digest {
			return fmt.Sprintf("page %d of sync task %s was received before with other content", info.Page, info.TaskID), false
		}
		return "", true
	}
	task.pages[info.Page] = digest
	task.held[info.Page] = in
	return "", false
}

// completeTask returns a task's pages in order once every one has arrived
// (and forgets them), or nil while pages are missing.
func (s *Sim) completeTask(path string, in *webhookBody) []*webhookBody {
	if in.Data.SyncInfo.TaskID == "" {
		return []*webhookBody{in}
	}
	task, ok := s.tasks.get(path + "\x00" + in.Data.SyncInfo.TaskID)
	if !ok || len(task.held) < task.total {
		return nil
	}
	pages := make([]*webhookBody, 0, task.total)
	for p := 1; p <= task.total; p++ {
		pages = append(pages, task.held[p])
	}
	task.held = map[int]*webhookBody{}
	return pages
}

type webhookUser struct {
	ID string `json:"id"`
}

func (s *Sim) webhook(w http.ResponseWriter, r *http.Request, body []byte) {
	sig := r.Header.Get("X-Seghub-Signature")
	secret, signed := s.webhookSecret(r.URL.Path)
	if signed {
		if why := checkSignature(secret, sig, body, time.Now()); why != "" {
			s.state.Counters["rejected"]++
			s.state.Counters["webhook_bad_signature"]++
			writeJSON(w, 401, map[string]string{"error": "invalid signature", "message": why})
			return
		}
		s.state.Counters["webhook_verified"]++
	}
	var in webhookBody
	if err := json.Unmarshal(body, &in); err != nil {
		writeJSON(w, 400, map[string]string{"error": "body must be a JSON object"})
		return
	}
	if in.ActionType == "segment.users.sync" {
		if in.Data.Segment.ID == "" {
			writeJSON(w, 400, map[string]string{"error": "data.segment.id is required"})
			return
		}
		refusal, repeat := s.taskPage(r.URL.Path, &in, body)
		if refusal != "" {
			s.state.Counters["webhook_task_conflicts"]++
			writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"error": "inconsistent sync task", "message": refusal})
			return
		}
		if repeat {
			s.state.Counters["webhook_repeated_pages"]++
			writeJSON(w, 200, map[string]string{"status": "received"})
			return
		}
		segs := s.state.WebhookSegments[r.URL.Path]
		if segs == nil {
			segs = map[string]*WebhookSegment{}
			s.state.WebhookSegments[r.URL.Path] = segs
		}
		for _, page := range s.completeTask(r.URL.Path, &in) {
			seg := segs[page.Data.Segment.ID]
			if seg == nil {
				seg = &WebhookSegment{Members: map[string]bool{}}
				segs[page.Data.Segment.ID] = seg
			}
			seg.Name = page.Data.Segment.Name
			for _, u := range page.Data.Add {
				seg.Members[u.ID] = true
			}
			for _, u := range page.Data.Remove {
				delete(seg.Members, u.ID)
			}
		}
	}
	s.state.Webhooks = append(s.state.Webhooks, WebhookDelivery{Path: r.URL.Path, Signature: sig, Body: json.RawMessage(body), Verified: signed})
	writeJSON(w, 200, map[string]string{"status": "received"})
}
