package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"
	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/pkg/auth"
)

// OFREP (OpenFeature Remote Evaluation Protocol) on the gateway: any
// OpenFeature SDK's OFREP provider evaluates seghub's experiences and public
// segments as boolean flags, one bulk call per page view.
//
// Flag keys: an experience's id ("exp_…") is its flag; a public segment is
// "segment:<segment id>". The evaluation context's targetingKey is the user
// id. Values: eligible / member → true, otherwise false. Reasons: STATIC
// (audience is everyone), TARGETING_MATCH (a condition decided yes; which one
// is metadata.decidedBy), DEFAULT (not eligible, not a member), DISABLED.
const (
	ofrepFlagsPath     = "/ofrep/v1/evaluate/flags"
	ofrepSegmentPrefix = "segment:"
	// ofrepMaxBody bounds an evaluation request: a context is a handful of
	// attributes, and only targetingKey is read.
	ofrepMaxBody = 64 << 10
	// ofrepMaxKey bounds a flag key in the path.
	ofrepMaxKey = 300
	// ofrepTimeout bounds one evaluation, which is answered from memory.
	ofrepTimeout = 10 * time.Second
)

// OFREP error codes (OpenFeature's error codes).
const (
	ofrepTargetingKeyMissing = "TARGETING_KEY_MISSING"
	ofrepInvalidContext      = "INVALID_CONTEXT"
	ofrepFlagNotFound        = "FLAG_NOT_FOUND"
	ofrepGeneral             = "GENERAL"
)

// ofrep answers OFREP requests by calling TargetingService.EvaluateUser with
// the caller's own key, so the service's access check (ACCESS_CLIENT) and
// environment scoping apply as to any other call.
type ofrep struct {
	g      *Gateway
	client targetingv1.TargetingServiceClient
}

// mountOFREP adds the OFREP routes (and their CORS preflights: client keys
// are meant for web pages on other origins).
func (g *Gateway) mountOFREP() error {
	client, err := g.targetingClient()
	if err != nil {
		return err
	}
	o := &ofrep{g: g, client: client}
	g.mux.Handle("POST "+ofrepFlagsPath, ofrepCORS(http.HandlerFunc(o.bulk)))
	g.mux.Handle("POST "+ofrepFlagsPath+"/{key}", ofrepCORS(http.HandlerFunc(o.single)))
	g.mux.Handle("OPTIONS "+ofrepFlagsPath, ofrepCORS(http.HandlerFunc(ofrepPreflight)))
	g.mux.Handle("OPTIONS "+ofrepFlagsPath+"/{key}", ofrepCORS(http.HandlerFunc(ofrepPreflight)))
	return nil
}

// ofrepCORS lets any origin call OFREP: keys travel in headers, never
// cookies, so no ambient credential is exposed to another site.
func ofrepCORS(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Expose-Headers", "ETag, Retry-After")
		next.ServeHTTP(w, r)
	})
}

func ofrepPreflight(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Methods", "POST, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Authorization, X-API-Key, Content-Type, If-None-Match")
	h.Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
}

// ofrepFlag is one evaluated flag of an OFREP answer.
type ofrepFlag struct {
	Key      string        `json:"key"`
	Value    bool          `json:"value"`
	Reason   string        `json:"reason"`
	Variant  string        `json:"variant"`
	Metadata ofrepMetadata `json:"metadata"`
}

// ofrepMetadata is a flag's metadata (OFREP allows strings, numbers and
// booleans); a struct, so encoding needs no map sorting.
type ofrepMetadata struct {
	// Kind is "experience" or "segment".
	Kind        string `json:"kind"`
	Name        string `json:"name,omitempty"`
	Type        string `json:"type,omitempty"`
	DecidedBy   string `json:"decidedBy,omitempty"`
	Explanation string `json:"explanation,omitempty"`
	// IndexVersion is sent with single evaluations only.
	IndexVersion int64 `json:"indexVersion,omitempty"`
}

// ofrepError is OFREP's evaluationFailure / flagNotFound / bulk failure shape.
type ofrepError struct {
	status     int
	Key        string `json:"key,omitempty"`
	ErrorCode  string `json:"errorCode,omitempty"`
	Details    string `json:"errorDetails"`
	retryAfter string
}

func (e *ofrepError) Error() string { return e.Details }

// request is what both endpoints read before evaluating: the caller (checked
// before the body is read) and the context's targeting key.
type ofrepRequest struct {
	ctx       context.Context
	principal auth.Principal
	userID    string
}

// read authenticates the caller, then reads the bounded body and its
// targetingKey. It answers the error itself and returns false on failure.
func (o *ofrep) read(w http.ResponseWriter, r *http.Request, key string) (ofrepRequest, bool) {
	md := metadata.MD{}
	if v := r.Header.Get("Authorization"); v != "" {
		md.Set("authorization", v)
	}
	if v := r.Header.Get("X-Api-Key"); v != "" {
		md.Set("x-api-key", v)
	}
	p, err := o.g.p.Auth.Authenticate(metadata.NewIncomingContext(r.Context(), md))
	if err != nil {
		writeOFREPError(w, ofrepStatusError(err, key))
		return ofrepRequest{}, false
	}
	if r.ContentLength > ofrepMaxBody {
		writeOFREPError(w, ofrepTooLarge(key))
		return ofrepRequest{}, false
	}
	body, err := readBody(http.MaxBytesReader(w, r.Body, ofrepMaxBody), ofrepMaxBody)
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		writeOFREPError(w, ofrepTooLarge(key))
		return ofrepRequest{}, false
	case err != nil:
		writeOFREPError(w, &ofrepError{status: http.StatusBadRequest, Key: key, ErrorCode: ofrepInvalidContext, Details: "could not read the request body"})
		return ofrepRequest{}, false
	}
	user, oerr := targetingKey(body)
	if oerr != nil {
		oerr.Key = key
		writeOFREPError(w, oerr)
		return ofrepRequest{}, false
	}
	return ofrepRequest{ctx: metadata.NewOutgoingContext(r.Context(), md), principal: p, userID: user}, true
}

func ofrepTooLarge(key string) *ofrepError {
	return &ofrepError{status: http.StatusRequestEntityTooLarge, Key: key, ErrorCode: ofrepGeneral,
		Details: "OFREP request bodies are at most 64 KiB (65536 bytes): send only the evaluation context"}
}

// targetingKey reads the evaluation context's targetingKey, the user id.
func targetingKey(body []byte) (string, *ofrepError) {
	invalid := func(why string) (string, *ofrepError) {
		return "", &ofrepError{status: http.StatusBadRequest, ErrorCode: ofrepInvalidContext, Details: why}
	}
	var req struct {
		Context map[string]json.RawMessage `json:"context"`
	}
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := json.Unmarshal(body, &req); err != nil {
			return invalid("the body must be a JSON object {\"context\": {\"targetingKey\": \"<user id>\", ...}}")
		}
	}
	raw, ok := req.Context["targetingKey"]
	if !ok || string(raw) == "null" {
		return "", &ofrepError{status: http.StatusBadRequest, ErrorCode: ofrepTargetingKeyMissing, Details: "context.targetingKey is required: it is the user id seghub evaluates"}
	}
	var user string
	if err := json.Unmarshal(raw, &user); err != nil {
		return invalid("context.targetingKey must be a string (the user id)")
	}
	switch {
	case strings.TrimSpace(user) == "":
		return "", &ofrepError{status: http.StatusBadRequest, ErrorCode: ofrepTargetingKeyMissing, Details: "context.targetingKey is empty: it is the user id seghub evaluates"}
	case len(user) > 256:
		return invalid("context.targetingKey must be at most 256 bytes")
	}
	if p := apperr.IdentifierProblem(user); p != "" {
		return invalid("context.targetingKey " + p)
	}
	return user, nil
}

// bulk is POST /ofrep/v1/evaluate/flags: every experience and public segment
// for the user, with an ETag; If-None-Match with the current ETag costs a
// version comparison and answers 304.
func (o *ofrep) bulk(w http.ResponseWriter, r *http.Request) {
	req, ok := o.read(w, r, "")
	if !ok {
		return
	}
	scope := ofrepScope(req.principal.EnvironmentID, req.userID)
	in := &targetingv1.EvaluateUserRequest{UserId: req.userID}
	if tag, ok := matchingETag(r.Header.Get("If-None-Match"), scope); ok {
		in.IfIndexVersion, in.IfExperiencesVersion, in.IfAnswerHash = tag.index, tag.experiences, tag.answer
	}
	ctx, cancel := context.WithTimeout(req.ctx, ofrepTimeout)
	defer cancel()
	out, err := o.client.EvaluateUser(ctx, in)
	if err != nil {
		writeOFREPError(w, ofrepStatusError(err, ""))
		return
	}
	etag := ofrepETag{index: out.GetIndexVersion(), experiences: out.GetExperiencesVersion(), scope: scope, answer: out.GetAnswerHash()}.String()
	w.Header().Set("ETag", etag)
	// Revalidate every time: the answer changes with memberships.
	w.Header().Set("Cache-Control", "private, no-cache")
	if out.GetNotModified() {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	flags := make([]ofrepFlag, 0, len(out.GetExperiences())+len(out.GetSegments()))
	// No index version in bulk flags' metadata: a 304 must leave the
	// client's copy exact, and the version moves without this answer
	// changing.
	for _, x := range out.GetExperiences() {
		flags = append(flags, experienceFlag(x, 0))
	}
	for _, s := range out.GetSegments() {
		flags = append(flags, segmentFlag(s, 0))
	}
	writeJSON(w, http.StatusOK, map[string]any{"flags": flags})
}

// single is POST /ofrep/v1/evaluate/flags/{key}: one experience or public
// segment; 404 FLAG_NOT_FOUND when the key names neither.
func (o *ofrep) single(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if len(key) > ofrepMaxKey || apperr.IdentifierProblem(key) != "" {
		// Not echoed: it may be anything.
		writeOFREPError(w, &ofrepError{status: http.StatusNotFound, ErrorCode: ofrepFlagNotFound, Details: "no flag has such a key: keys are at most 300 bytes without control characters"})
		return
	}
	req, ok := o.read(w, r, key)
	if !ok {
		return
	}
	in := &targetingv1.EvaluateUserRequest{UserId: req.userID}
	segment, isSegment := strings.CutPrefix(key, ofrepSegmentPrefix)
	if isSegment {
		in.SegmentIds = []string{segment}
	} else {
		in.ExperienceIds = []string{key}
	}
	ctx, cancel := context.WithTimeout(req.ctx, ofrepTimeout)
	defer cancel()
	out, err := o.client.EvaluateUser(ctx, in)
	if err != nil {
		writeOFREPError(w, ofrepStatusError(err, key))
		return
	}
	switch {
	case isSegment && len(out.GetSegments()) == 1:
		writeJSON(w, http.StatusOK, segmentFlag(out.GetSegments()[0], out.GetIndexVersion()))
	case !isSegment && len(out.GetExperiences()) == 1:
		writeJSON(w, http.StatusOK, experienceFlag(out.GetExperiences()[0], out.GetIndexVersion()))
	default:
		what := "no experience of this environment has this id"
		if isSegment {
			what = "no public segment of this environment has this id"
		}
		writeOFREPError(w, &ofrepError{status: http.StatusNotFound, Key: key, ErrorCode: ofrepFlagNotFound,
			Details: what + " (flag keys: an experience id, or segment:<segment id>)"})
	}
}

func experienceFlag(x *targetingv1.ExperienceEvaluation, version int64) ofrepFlag {
	f := ofrepFlag{Key: x.GetExperienceId(), Value: x.GetEligible(), Variant: variant(x.GetEligible()), Metadata: ofrepMetadata{
		Kind: "experience", Name: x.GetName(), Type: experienceType(x.GetType()),
		DecidedBy: x.GetDecidedBy(), Explanation: x.GetReason(), IndexVersion: version,
	}}
	switch {
	case !x.GetEnabled():
		f.Reason = "DISABLED"
	case x.GetEligible() && x.GetDecidedBy() == "everyone":
		f.Reason = "STATIC"
	case x.GetEligible():
		f.Reason = "TARGETING_MATCH"
	default:
		f.Reason = "DEFAULT"
	}
	return f
}

func segmentFlag(s *targetingv1.SegmentEvaluation, version int64) ofrepFlag {
	f := ofrepFlag{Key: ofrepSegmentPrefix + s.GetSegmentId(), Value: s.GetIsMember(), Variant: variant(s.GetIsMember()), Reason: "DEFAULT",
		Metadata: ofrepMetadata{Kind: "segment", IndexVersion: version}}
	if s.GetIsMember() {
		f.Reason = "TARGETING_MATCH"
	}
	return f
}

func variant(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

// experienceType is the type's short name ("product_tour").
func experienceType(t targetingv1.ExperienceType) string {
	return strings.ToLower(strings.TrimPrefix(t.String(), "EXPERIENCE_TYPE_"))
}

// ofrepStatusError maps a gRPC error to OFREP's status and shape.
func ofrepStatusError(err error, key string) *ofrepError {
	st := status.Convert(err)
	code, retryAfter := httpStatus(st)
	e := &ofrepError{status: code, Key: key, Details: st.Message(), retryAfter: retryAfter}
	switch st.Code() {
	case codes.InvalidArgument:
		e.ErrorCode = ofrepInvalidContext
		if apperr.IsTooLarge(st) {
			e.ErrorCode = ofrepGeneral
		}
	case codes.NotFound:
		e.ErrorCode = ofrepFlagNotFound
	case codes.Unauthenticated, codes.PermissionDenied:
		e.Key = ""
	case codes.ResourceExhausted:
		if e.retryAfter == "" {
			e.retryAfter = "1"
		}
		e.ErrorCode = ofrepGeneral
	case codes.Unavailable:
		// The replica is loading its index: a short wait fixes it.
		if e.retryAfter == "" {
			e.retryAfter = "1"
		}
		e.ErrorCode = ofrepGeneral
	default:
		e.ErrorCode = ofrepGeneral
	}
	return e
}

func writeOFREPError(w http.ResponseWriter, e *ofrepError) {
	if e.retryAfter != "" {
		w.Header().Set("Retry-After", e.retryAfter)
	}
	writeJSON(w, e.status, e)
}

// ofrepETag is a bulk answer's entity tag: the index version and the
// experiences version it was computed from (while both hold, a 304 costs no
// evaluation), a hash of the environment and user it is for (so a tag never
// matches another user's or environment's answer), and a hash of the answer
// itself (so another user's membership change still ends in a 304).
type ofrepETag struct {
	index       int64
	experiences string
	scope       string
	// answer is the hash of the evaluations: a tag whose versions moved
	// still matches while this user's answer stays the same.
	answer string
}

func (t ofrepETag) String() string {
	return `"` + strconv.FormatInt(t.index, 10) + "-" + t.experiences + "-" + t.scope + "-" + t.answer + `"`
}

// ofrepScope hashes the environment and user an answer is for.
func ofrepScope(env, user string) string {
	h := sha256.Sum256([]byte(env + "\x00" + user))
	return hex.EncodeToString(h[:8])
}

// matchingETag finds, in an If-None-Match header, a tag this gateway issued
// for scope. Tags of other users, environments or servers are ignored.
func matchingETag(header, scope string) (ofrepETag, bool) {
	if header == "" || len(header) > 4096 {
		return ofrepETag{}, false
	}
	for _, raw := range strings.Split(header, ",") {
		raw = strings.TrimPrefix(strings.TrimSpace(raw), "W/")
		raw = strings.Trim(raw, `"`)
		parts := strings.Split(raw, "-")
		if len(parts) != 4 || parts[2] != scope || parts[1] == "" || parts[3] == "" {
			continue
		}
		idx, err := strconv.ParseInt(parts[0], 10, 64)
		if err != nil || idx <= 0 {
			continue
		}
		return ofrepETag{index: idx, experiences: parts[1], scope: scope, answer: parts[3]}, true
	}
	return ofrepETag{}, false
}
