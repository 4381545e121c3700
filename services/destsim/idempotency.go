package destsim

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
)

// IdempotencyKeys is how many keys the simulator remembers by default
// (Limits.IdempotencyKeys changes it); the oldest are forgotten first, as
// real APIs forget keys after a day.
const IdempotencyKeys = 100_000

// remembered is the first answer given to an idempotency key, with the
// digest of the request it answered.
type remembered struct {
	digest      [sha256.Size]byte
	status      int
	contentType string
	body        []byte
}

// keyCache is a bounded memory of keys, the oldest forgotten first.
type keyCache[V any] struct {
	max   int // ≤ 0: unbounded
	seen  map[string]V
	order []string
}

func newKeyCache[V any](max int) *keyCache[V] {
	return &keyCache[V]{max: max, seen: map[string]V{}}
}

func (c *keyCache[V]) get(key string) (V, bool) {
	v, ok := c.seen[key]
	return v, ok
}

func (c *keyCache[V]) put(key string, v V) {
	if _, ok := c.seen[key]; !ok {
		c.order = append(c.order, key)
	}
	c.seen[key] = v
	for c.max > 0 && len(c.seen) > c.max {
		delete(c.seen, c.order[0])
		c.order = c.order[1:]
	}
}

// teeWriter passes an answer on and keeps a copy of it.
type teeWriter struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (t *teeWriter) WriteHeader(code int) {
	t.status = code
	t.ResponseWriter.WriteHeader(code)
}

func (t *teeWriter) Write(b []byte) (int, error) {
	if t.status == 0 {
		t.status = http.StatusOK
	}
	t.body.Write(b)
	return t.ResponseWriter.Write(b)
}

// remembersAnswer reports whether an answer is what the key stands for:
// refused credentials, rate limits and server errors happen before the
// request is carried out, so a retry under the same key is carried out anew
// (as Stripe-style idempotency layers do).
func remembersAnswer(status int) bool {
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusTooManyRequests:
		return false
	}
	return status < 500
}

// idempotent makes h honour the Idempotency-Key header as the real APIs do:
// a repeated key with the same body gets the first answer again (and
// changes nothing); a repeated key with another body is refused with 422.
// Keys are scoped by method and path, so one account's keys never meet
// another's. It runs under the simulator's lock, like h.
func (s *Sim) idempotent(h func(w http.ResponseWriter, r *http.Request, body []byte)) func(w http.ResponseWriter, r *http.Request, body []byte) {
	return func(w http.ResponseWriter, r *http.Request, body []byte) {
		key := r.Header.Get("Idempotency-Key")
		if key == "" {
			h(w, r, body)
			return
		}
		scope := r.Method + " " + r.URL.Path + "\x00" + key
		digest := sha256.Sum256(body)
		if first, ok := s.keys.get(scope); ok {
			if first.digest != digest {
				s.state.Counters["idempotency_conflicts"]++
				writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"error": "idempotency key reused",
					"message": fmt.Sprintf("Idempotency-Key %q was first used with a different request body; a key names one exact payload", key)})
				return
			}
			s.state.Counters["idempotent_replays"]++
			w.Header().Set("Content-Type", first.contentType)
			w.Header().Set("Idempotent-Replayed", "true")
			w.WriteHeader(first.status)
			_, _ = w.Write(first.body)
			return
		}
		tee := &teeWriter{ResponseWriter: w}
		h(tee, r, body)
		if tee.status == 0 {
			tee.status = http.StatusOK
		}
		if remembersAnswer(tee.status) {
			s.keys.put(scope, &remembered{digest: digest, status: tee.status, contentType: w.Header().Get("Content-Type"), body: tee.body.Bytes()})
		}
	}
}

// eventDigest is the digest of one bulk-track event as sent.
func eventDigest(ev map[string]any) [sha256.Size]byte {
	b, _ := json.Marshal(ev) // map keys sorted: the same event, the same bytes
	return sha256.Sum256(b)
}
