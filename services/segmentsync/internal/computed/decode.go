package computed

import (
	"bytes"
	"encoding/json"
	"strings"
	"unicode/utf8"

	"github.com/seghub/seghub/services/segmentsync/internal/rules"
	"github.com/seghub/seghub/services/segmentsync/internal/store"
)

// envelope mirrors the relay's stored event (its JSON is the stream's
// contract between the two services).
type envelope struct {
	ID       string         `json:"id"`
	Env      string         `json:"env"`
	Source   string         `json:"src"`
	User     string         `json:"user"`
	Name     string         `json:"name"`
	Time     int64          `json:"ts"`
	Props    map[string]any `json:"props"`
	Received int64          `json:"rcv"`
}

// rawEvent is an envelope's fields as views into the message (no copies):
// the backfill compares them with its conditions without allocating.
type rawEvent struct {
	env, src, user, name []byte
	ts, rcv              int64
	props                []byte // raw JSON object; nil when absent or null
}

// counted tells whether a subject (past the events prefix) carries an event
// to count: <env>.<partition>.<source>, not a replay of a dead letter
// (<env>.<partition>._replay.<conn>). The token is looked for in any place
// so a layout change cannot make replays count twice.
func counted(rest string) bool {
	_, after, ok := strings.Cut(rest, ".")
	if !ok {
		return false
	}
	for after != "" {
		var tok string
		tok, after, _ = strings.Cut(after, ".")
		if tok == "_replay" {
			return false
		}
	}
	return true
}

// decode reads an event; replays of dead letters (a sink's second try of
// an event already stored) are not new events and are skipped.
func (e *Evaluator) decode(subject string, data []byte) (store.Event, bool) {
	rest, ok := strings.CutPrefix(subject, e.prefix)
	if !ok || !counted(rest) {
		return store.Event{}, false
	}
	var r rawEvent
	if !scanEnvelope(data, &r) || len(r.env) == 0 || len(r.user) == 0 {
		e.o.Logger.Warn("computed segments: unreadable event skipped", "subject", subject)
		return store.Event{}, false
	}
	ev := store.Event{Env: string(r.env), User: string(r.user), Source: string(r.src), Name: string(r.name), Time: rules.EventTime(r.ts, r.rcv)}
	if r.props != nil {
		if err := json.Unmarshal(r.props, &ev.Props); err != nil {
			return store.Event{}, false
		}
	}
	return ev, true
}

// scanEnvelope reads an envelope as encoding/json would into envelope, with
// props left raw (only conditions with property filters read them): a
// hand-written pass over the common shape (plain strings, integer times),
// and encoding/json itself for anything else (escapes, odd key case,
// numbers that are not plain integers…). It reports false where
// encoding/json fails.
func scanEnvelope(data []byte, r *rawEvent) bool {
	*r = rawEvent{}
	if fastEnvelope(data, r) {
		return true
	}
	*r = rawEvent{}
	var env envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return false
	}
	r.env, r.src, r.user, r.name = []byte(env.Env), []byte(env.Source), []byte(env.User), []byte(env.Name)
	r.ts, r.rcv = env.Time, env.Received
	if env.Props != nil {
		p, err := json.Marshal(env.Props)
		if err != nil {
			return false
		}
		r.props = p
	}
	return true
}

// fastEnvelope scans the envelope's usual shape; false means "let
// encoding/json decide" (not necessarily invalid).
func fastEnvelope(d []byte, r *rawEvent) bool {
	i := skipWS(d, 0)
	if i >= len(d) || d[i] != '{' {
		return false
	}
	i = skipWS(d, i+1)
	if i < len(d) && d[i] == '}' {
		return skipWS(d, i+1) == len(d)
	}
	seenProps := false
	for {
		key, j, ok := plainString(d, i)
		if !ok {
			return false
		}
		i = skipWS(d, j)
		if i >= len(d) || d[i] != ':' {
			return false
		}
		i = skipWS(d, i+1)
		if i >= len(d) {
			return false
		}
		switch string(key) {
		case "env", "src", "user", "name", "id":
			if d[i] == 'n' {
				if !bytes.HasPrefix(d[i:], []byte("null")) {
					return false
				}
				i += 4
				break
			}
			s, j, ok := plainString(d, i)
			if !ok {
				return false
			}
			switch string(key) {
			case "env":
				r.env = s
			case "src":
				r.src = s
			case "user":
				r.user = s
			case "name":
				r.name = s
			}
			i = j
		case "ts", "rcv":
			if d[i] == 'n' {
				if !bytes.HasPrefix(d[i:], []byte("null")) {
					return false
				}
				i += 4
				break
			}
			n, j, ok := plainInt(d, i)
			if !ok {
				return false
			}
			if string(key) == "ts" {
				r.ts = n
			} else {
				r.rcv = n
			}
			i = j
		case "props":
			if seenProps {
				return false // encoding/json merges repeated objects
			}
			seenProps = true
			switch d[i] {
			case 'n':
				if !bytes.HasPrefix(d[i:], []byte("null")) {
					return false
				}
				r.props = nil
				i += 4
			case '{':
				j, ok := skipComposite(d, i)
				if !ok || !json.Valid(d[i:j]) {
					return false
				}
				r.props = d[i:j]
				i = j
			default:
				return false
			}
		default:
			// Other fields (fwd, conn, acid…) are skipped; a key that
			// encoding/json would match case-insensitively is its call.
			for _, k := range []string{"id", "env", "src", "user", "name", "ts", "props", "rcv"} {
				if bytes.EqualFold(key, []byte(k)) {
					return false
				}
			}
			j, ok := skipValue(d, i)
			if !ok {
				return false
			}
			i = j
		}
		i = skipWS(d, i)
		if i >= len(d) {
			return false
		}
		if d[i] == '}' {
			return skipWS(d, i+1) == len(d)
		}
		if d[i] != ',' {
			return false
		}
		i = skipWS(d, i+1)
	}
}

func skipWS(d []byte, i int) int {
	for i < len(d) && (d[i] == ' ' || d[i] == '\t' || d[i] == '\n' || d[i] == '\r') {
		i++
	}
	return i
}

// plainString reads a string without escapes, of valid UTF-8, at d[i].
func plainString(d []byte, i int) ([]byte, int, bool) {
	if i >= len(d) || d[i] != '"' {
		return nil, 0, false
	}
	ascii := true
	for j := i + 1; j < len(d); j++ {
		c := d[j]
		switch {
		case c == '"':
			s := d[i+1 : j]
			if !ascii && !utf8.Valid(s) {
				return nil, 0, false
			}
			return s, j + 1, true
		case c == '\\' || c < 0x20:
			return nil, 0, false
		case c >= 0x80:
			ascii = false
		}
	}
	return nil, 0, false
}

// plainInt reads a JSON integer that fits an int64 (no fraction, exponent
// or leading zeros) at d[i].
func plainInt(d []byte, i int) (int64, int, bool) {
	neg := false
	if i < len(d) && d[i] == '-' {
		neg = true
		i++
	}
	start := i
	var n uint64
	for i < len(d) && d[i] >= '0' && d[i] <= '9' {
		if i-start >= 18 {
			return 0, 0, false // may overflow: encoding/json decides
		}
		n = n*10 + uint64(d[i]-'0')
		i++
	}
	if i == start || (d[start] == '0' && i-start > 1) {
		return 0, 0, false
	}
	if i < len(d) && (d[i] == '.' || d[i] == 'e' || d[i] == 'E') {
		return 0, 0, false
	}
	if neg {
		return -int64(n), i, true
	}
	return int64(n), i, true
}

// skipValue passes over a JSON value at d[i] (validated: strings and
// literals here, objects and arrays by json.Valid).
func skipValue(d []byte, i int) (int, bool) {
	switch c := d[i]; {
	case c == '"':
		_, j, ok := plainString(d, i)
		return j, ok
	case c == '{' || c == '[':
		j, ok := skipComposite(d, i)
		if !ok || !json.Valid(d[i:j]) {
			return 0, false
		}
		return j, true
	case c == 't':
		return i + 4, bytes.HasPrefix(d[i:], []byte("true"))
	case c == 'f':
		return i + 5, bytes.HasPrefix(d[i:], []byte("false"))
	case c == 'n':
		return i + 4, bytes.HasPrefix(d[i:], []byte("null"))
	case c == '-' || (c >= '0' && c <= '9'):
		j := i + 1
		for j < len(d) && (d[j] >= '0' && d[j] <= '9' || d[j] == '.' || d[j] == 'e' || d[j] == 'E' || d[j] == '+' || d[j] == '-') {
			j++
		}
		return j, json.Valid(d[i:j])
	}
	return 0, false
}

// skipComposite finds the end of the object or array at d[i] by bracket
// depth (strings skipped with their escapes); validity is checked apart.
func skipComposite(d []byte, i int) (int, bool) {
	depth := 0
	for j := i; j < len(d); j++ {
		switch d[j] {
		case '"':
			for j++; j < len(d) && d[j] != '"'; j++ {
				if d[j] == '\\' {
					j++
				}
			}
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return j + 1, true
			}
		}
	}
	return 0, false
}
