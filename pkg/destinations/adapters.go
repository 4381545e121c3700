package destinations

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// --- Appcues -----------------------------------------------------------------

// appcues speaks the Appcues public API v2: membership is the boolean user
// profile property "[<prefix>] <frozen name>". Small batches PATCH each
// profile; larger ones use the bulk profile import (202 Accepted).
type appcues struct {
	t Type
	h *httpClient
}

const appcuesPatchLimit = 20

func (a *appcues) Type() Type { return a.t }

func (a *appcues) auth() map[string]string {
	cred := a.h.c.Credentials["api_key"] + ":" + a.h.c.Credentials["api_secret"]
	return map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte(cred))}
}

func (a *appcues) account() string { return url.PathEscape(a.h.c.Credentials["account_id"]) }

// Check reads the account. Assumed: GET /v2/accounts/{id} answers 200 to a
// valid key (Appcues documents the v2 API's Basic auth, not this probe).
func (a *appcues) Check(ctx context.Context) error {
	return a.h.do(ctx, request{method: "GET", path: "/v2/accounts/" + a.account(), header: a.auth()}, nil)
}

// Property is the profile property a segment becomes in Appcues.
func (a *appcues) property(name string) string { return a.h.c.Prefix + " " + name }

func (a *appcues) DeliverSegment(ctx context.Context, b SegmentBatch) (BatchResult, error) {
	prop := a.property(b.DisplayName)
	n := len(b.Add) + len(b.Remove)
	if n <= appcuesPatchLimit {
		var res BatchResult
		for _, pair := range []struct {
			ids    []Identity
			member bool
		}{{b.Add, true}, {b.Remove, false}} {
			for _, id := range pair.ids {
				err := a.h.do(ctx, request{method: "PATCH", path: "/v2/accounts/" + a.account() + "/users/" + url.PathEscape(id.ID) + "/profile", header: a.auth(), body: map[string]any{prop: pair.member}}, nil)
				if KindOf(err) == Permanent {
					res.Failed = append(res.Failed, Failure{Identity: id, Removal: !pair.member, Reason: err.Error()})
					continue
				}
				if err != nil {
					return res, err
				}
			}
		}
		return res, nil
	}
	// Assumed shape of the bulk import body: {"profiles": [{"user_id", ...}]}.
	profiles := make([]map[string]any, 0, n)
	for _, id := range b.Add {
		profiles = append(profiles, map[string]any{"user_id": id.ID, prop: true})
	}
	for _, id := range b.Remove {
		profiles = append(profiles, map[string]any{"user_id": id.ID, prop: false})
	}
	h := a.auth()
	h["Idempotency-Key"] = b.IdempotencyKey
	var out struct {
		Rejected []struct {
			UserID string `json:"user_id"`
			Reason string `json:"reason"`
		} `json:"rejected"`
	}
	if err := a.h.do(ctx, request{method: "POST", path: "/v2/accounts/" + a.account() + "/import/profiles", header: h, body: map[string]any{"profiles": profiles}, weight: 1}, &out); err != nil {
		return BatchResult{}, err
	}
	return BatchResult{Failed: rejected(b, out.Rejected)}, nil
}

func rejected(b SegmentBatch, rej []struct {
	UserID string `json:"user_id"`
	Reason string `json:"reason"`
}) []Failure {
	if len(rej) == 0 {
		return nil
	}
	idx := map[string]Failure{}
	for _, id := range b.Add {
		idx[id.ID] = Failure{Identity: id}
	}
	for _, id := range b.Remove {
		idx[id.ID] = Failure{Identity: id, Removal: true}
	}
	var out []Failure
	for _, r := range rej {
		if f, ok := idx[r.UserID]; ok {
			f.Reason = Excerpt(r.Reason)
			out = append(out, f)
		}
	}
	return out
}

// Track posts each event to the user's events endpoint.
func (a *appcues) Track(ctx context.Context, events []Event) error {
	for _, e := range events {
		h := a.auth()
		h["Idempotency-Key"] = e.ID
		body := map[string]any{"name": e.Name, "timestamp": e.Timestamp.UTC().Format(time.RFC3339Nano), "attributes": e.Properties}
		if err := a.h.do(ctx, request{method: "POST", path: "/v2/accounts/" + a.account() + "/users/" + url.PathEscape(e.Identity) + "/events", header: h, body: body}, nil); err != nil {
			return err
		}
	}
	return nil
}

// --- CommandBar --------------------------------------------------------------

// commandbar speaks CommandBar's bulk identify API: membership is a boolean
// property named after the segment.
type commandbar struct {
	t Type
	h *httpClient
}

func (c *commandbar) Type() Type { return c.t }

func (c *commandbar) header(ctx context.Context) (map[string]string, error) {
	tok := c.h.c.Credentials["access_token"]
	if c.h.c.TokenSource != nil {
		var err error
		if tok, err = c.h.c.TokenSource(ctx); err != nil {
			return nil, &Error{Kind: AuthFailed, Message: "no access token: " + err.Error()}
		}
	}
	return map[string]string{"Authorization": "Bearer " + tok}, nil
}

func (c *commandbar) org() string { return url.PathEscape(c.h.c.Credentials["org_id"]) }

// Check posts an empty identify batch (assumed to be accepted as a no-op).
func (c *commandbar) Check(ctx context.Context) error {
	h, err := c.header(ctx)
	if err != nil {
		return err
	}
	return c.h.do(ctx, request{method: "POST", path: "/api/" + c.org() + "/bulk-identify/", header: h, raw: []byte("[]")}, nil)
}

func (c *commandbar) DeliverSegment(ctx context.Context, b SegmentBatch) (BatchResult, error) {
	h, err := c.header(ctx)
	if err != nil {
		return BatchResult{}, err
	}
	rows := make([]map[string]any, 0, len(b.Add)+len(b.Remove))
	for _, id := range b.Add {
		rows = append(rows, map[string]any{"id": id.ID, "properties": map[string]any{b.DisplayName: true}})
	}
	for _, id := range b.Remove {
		rows = append(rows, map[string]any{"id": id.ID, "properties": map[string]any{b.DisplayName: false}})
	}
	raw, _ := json.Marshal(rows)
	h["Idempotency-Key"] = b.IdempotencyKey
	return BatchResult{}, c.h.do(ctx, request{method: "POST", path: "/api/" + c.org() + "/bulk-identify/", header: h, raw: raw}, nil)
}

// --- AB Tasty ----------------------------------------------------------------

// abtasty uploads visitor ids to a partner segment after an OAuth 2.0 client
// credentials grant; uploaded data expires after 30 days (Type.Retention).
type abtasty struct {
	t Type
	h *httpClient

	mu    sync.Mutex
	token string
	// renew is when the cached token is replaced: shortly before the
	// expiry the token endpoint announced.
	renew time.Time
}

// VisitorIDPattern is what AB Tasty accepts as a visitor id (case-insensitive).
var VisitorIDPattern = regexp.MustCompile(`(?i)^[a-z0-9-]{1,32}$`)

func newABTasty(t Type, h *httpClient) *abtasty { return &abtasty{t: t, h: h} }

func (a *abtasty) Type() Type { return a.t }

// accessToken returns the cached token, or a new one (fresh) once the
// cached one is within a minute of the expires_in the server gave (never
// assumed) or, for tokens living under ten minutes, within a tenth of their
// lifetime, so that short-lived tokens are still reused.
func (a *abtasty) accessToken(ctx context.Context) (tok string, fresh bool, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.token != "" && time.Now().Before(a.renew) {
		return a.token, false, nil
	}
	var out struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {a.h.c.Credentials["client_id"]}, "client_secret": {a.h.c.Credentials["client_secret"]}}
	err = a.h.do(ctx, request{method: "POST", path: "/oauth/v2/token", raw: []byte(form.Encode()), header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}}, &out)
	if err != nil {
		return "", false, err
	}
	if out.AccessToken == "" {
		return "", false, &Error{Kind: AuthFailed, Message: "token endpoint returned no access_token"}
	}
	ttl := time.Duration(out.ExpiresIn) * time.Second
	a.token, a.renew = out.AccessToken, time.Now().Add(ttl-min(time.Minute, ttl/10))
	return a.token, true, nil
}

// forget drops tok from the cache unless another call already replaced it.
func (a *abtasty) forget(tok string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.token == tok {
		a.token = ""
	}
}

func (a *abtasty) Check(ctx context.Context) error {
	_, _, err := a.accessToken(ctx)
	return err
}

// DeliverSegment uploads rows {visitor_id, value}. Assumed: value true adds
// the visitor to the partner segment named by the display name, false
// removes it. Ids outside the visitor id pattern are reported, not sent.
func (a *abtasty) DeliverSegment(ctx context.Context, b SegmentBatch) (BatchResult, error) {
	var res BatchResult
	rows := make([]map[string]any, 0, len(b.Add)+len(b.Remove))
	for _, pair := range []struct {
		ids   []Identity
		value bool
	}{{b.Add, true}, {b.Remove, false}} {
		for _, id := range pair.ids {
			if !VisitorIDPattern.MatchString(id.ID) {
				res.Failed = append(res.Failed, Failure{Identity: id, Removal: !pair.value, Reason: "not a valid AB Tasty visitor id (^[a-z0-9-]{1,32}$)"})
				continue
			}
			rows = append(rows, map[string]any{"visitor_id": id.ID, "value": pair.value})
		}
	}
	if len(rows) == 0 {
		return res, nil
	}
	path := "/accounts/" + url.PathEscape(a.h.c.Credentials["account_identifier"]) + "/segments/" + url.PathEscape(b.DisplayName)
	// upload reports whether a refusal was of a cached token: one the server
	// no longer honours (expired or revoked early) says nothing about the
	// client credentials, so only a fresh token's refusal is final.
	upload := func() (cached bool, err error) {
		tok, fresh, err := a.accessToken(ctx)
		if err != nil {
			return false, err
		}
		err = a.h.do(ctx, request{method: "POST", path: path, header: map[string]string{"Authorization": "Bearer " + tok, "Idempotency-Key": b.IdempotencyKey}, body: rows}, nil)
		if KindOf(err) == AuthFailed {
			a.forget(tok)
			return !fresh, err
		}
		return false, err
	}
	if cached, err := upload(); !cached {
		return res, err
	}
	_, err := upload()
	return res, err
}

// --- Analytics (Heap-style track API) ----------------------------------------

type analytics struct {
	t Type
	h *httpClient
}

// MaxTrackEvents is the track API's events-per-request limit.
const MaxTrackEvents = 1000

func (a *analytics) Type() Type { return a.t }

func (a *analytics) Check(ctx context.Context) error {
	return a.h.do(ctx, request{method: "POST", path: "/api/track", body: map[string]any{"app_id": a.h.c.Credentials["app_id"], "events": []any{}}}, nil)
}

// Track sends events in requests of at most 1 000, each event carrying its
// id as idempotency_key.
func (a *analytics) Track(ctx context.Context, events []Event) error {
	for i := 0; i < len(events); i += MaxTrackEvents {
		chunk := events[i:min(i+MaxTrackEvents, len(events))]
		out := make([]map[string]any, len(chunk))
		for j, e := range chunk {
			out[j] = map[string]any{"identity": e.Identity, "event": e.Name, "timestamp": e.Timestamp.UTC().Format(time.RFC3339Nano), "properties": e.Properties, "idempotency_key": e.ID}
		}
		if err := a.h.do(ctx, request{method: "POST", path: "/api/track", body: map[string]any{"app_id": a.h.c.Credentials["app_id"], "events": out}, weight: len(chunk)}, nil); err != nil {
			return err
		}
	}
	return nil
}

// AddUserProperties sets user properties in analytics.
func (a *analytics) AddUserProperties(ctx context.Context, users map[string]map[string]any) error {
	list := make([]map[string]any, 0, len(users))
	for id, props := range users {
		list = append(list, map[string]any{"identity": id, "properties": props})
	}
	return a.h.do(ctx, request{method: "POST", path: "/api/add_user_properties", body: map[string]any{"app_id": a.h.c.Credentials["app_id"], "users": list}}, nil)
}

// --- Webhook -----------------------------------------------------------------

type webhook struct {
	t Type
	h *httpClient
}

func (w *webhook) Type() Type { return w.t }

// Sign computes the signature header value "ts:<unix>,hmac:<hex>" over the
// timestamp followed by the body (the format Heap's partner webhooks use).
func Sign(secret string, ts time.Time, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	unix := strconv.FormatInt(ts.Unix(), 10)
	m.Write([]byte(unix))
	m.Write(body)
	return "ts:" + unix + ",hmac:" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks a Sign header: the HMAC must match the timestamp followed by
// the body, and the timestamp be within tolerance of now (replays of old
// requests are refused).
func Verify(secret, header string, body []byte, now time.Time, tolerance time.Duration) bool {
	var ts, mac string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), ":")
		switch k {
		case "ts":
			ts = v
		case "hmac":
			mac = v
		}
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || mac == "" || secret == "" {
		return false
	}
	if d := now.Sub(time.Unix(unix, 0)); d > tolerance || d < -tolerance {
		return false
	}
	got, err := hex.DecodeString(mac)
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write(body)
	return hmac.Equal(got, m.Sum(nil))
}

func (w *webhook) post(ctx context.Context, body any) error {
	raw, _ := json.Marshal(body)
	u, err := url.Parse(w.h.c.Credentials["url"])
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return &Error{Kind: Permanent, Message: "invalid webhook url: must be an absolute http:// or https:// URL"}
	}
	hc := *w.h
	hc.c.BaseURL = u.Scheme + "://" + u.Host
	path := u.RequestURI()
	return hc.do(ctx, request{method: "POST", path: path, raw: raw, header: map[string]string{"X-Seghub-Signature": Sign(w.h.c.SigningSecret, time.Now(), raw)}}, nil)
}

func (w *webhook) Check(ctx context.Context) error {
	return w.post(ctx, map[string]any{"action_type": "ping"})
}

func (w *webhook) DeliverSegment(ctx context.Context, b SegmentBatch) (BatchResult, error) {
	ids := func(in []Identity) []map[string]string {
		out := make([]map[string]string, len(in))
		for i, id := range in {
			out[i] = map[string]string{"id": id.ID}
		}
		return out
	}
	body := map[string]any{"action_type": "segment.users.sync", "data": map[string]any{
		"segment":   map[string]string{"id": b.SegmentID, "name": b.DisplayName},
		"sync_info": map[string]any{"page_number": b.Page, "total_pages": b.TotalPages, "sync_task_id": b.TaskID},
		"add":       ids(b.Add), "remove": ids(b.Remove)}}
	return BatchResult{}, w.post(ctx, body)
}
