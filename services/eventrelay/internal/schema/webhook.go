package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// MaxWebhookEvents bounds the events of one webhook request.
const MaxWebhookEvents = 1000

// ErrTooManyEvents is wrapped by ParseWebhook for a body over MaxWebhookEvents.
var ErrTooManyEvents = errors.New("too many events")

// ParseWebhook decodes a tool's event webhook body into events of source. A
// body holds one event, a JSON array of events, or {"events": [...]}.
//
// Appcues (its webhook shape): {"id", "name": "appcues:flow_started",
// "timestamp": <unix ms or RFC 3339>, "user_id", "account_id",
// "attributes": {...}, "context": {"url", "title"}}.
// CommandBar (assumed; CommandBar documents the event names, not a webhook
// body): {"id", "event": "opened", "user_id" | "userId", "timestamp",
// "properties" | "metadata": {...}}.
func ParseWebhook(source string, body []byte) ([]Input, error) {
	raw, err := splitEvents(body)
	if err != nil {
		return nil, err
	}
	out := make([]Input, 0, len(raw))
	for i, r := range raw {
		var in Input
		switch source {
		case Appcues:
			in, err = appcuesWebhookEvent(r)
		case CommandBar:
			in, err = commandBarWebhookEvent(r)
		default:
			return nil, fmt.Errorf("%s sends no event webhooks", source)
		}
		if err != nil {
			return nil, fmt.Errorf("events[%d]: %w", i, err)
		}
		in.Source = source
		out = append(out, in)
	}
	return out, nil
}

func splitEvents(body []byte) ([]json.RawMessage, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, errors.New("empty body")
	}
	var list []json.RawMessage
	switch body[0] {
	case '[':
		if err := json.Unmarshal(body, &list); err != nil {
			return nil, fmt.Errorf("malformed JSON array: %v", err)
		}
	case '{':
		var wrapper struct {
			Events []json.RawMessage `json:"events"`
		}
		if err := json.Unmarshal(body, &wrapper); err != nil {
			return nil, fmt.Errorf("malformed JSON: %v", err)
		}
		if wrapper.Events != nil {
			list = wrapper.Events
		} else {
			list = []json.RawMessage{body}
		}
	default:
		return nil, errors.New("body must be a JSON object or array")
	}
	if len(list) == 0 {
		return nil, errors.New("no events")
	}
	if len(list) > MaxWebhookEvents {
		return nil, fmt.Errorf("%w: %d events; at most %d a request", ErrTooManyEvents, len(list), MaxWebhookEvents)
	}
	return list, nil
}

func decodeObject(r json.RawMessage) (map[string]any, error) {
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(r))
	if err := d.Decode(&m); err != nil || m == nil {
		return nil, errors.New("each event must be a JSON object")
	}
	return m, nil
}

func str(m map[string]any, keys ...string) string {
	for _, k := range keys {
		switch v := m[k].(type) {
		case string:
			if v != "" {
				return v
			}
		case float64:
			return strconv.FormatFloat(v, 'f', -1, 64) // not 1.234567e+06
		}
	}
	return ""
}

func object(m map[string]any, keys ...string) (map[string]any, error) {
	for _, k := range keys {
		if v, ok := m[k]; ok && v != nil {
			o, ok := v.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%s must be an object", k)
			}
			return o, nil
		}
	}
	return map[string]any{}, nil
}

func eventTime(m map[string]any, in *Input) error {
	if v, ok := m["timestamp"]; ok && v != nil {
		t, ok := ParseTime(v)
		if !ok {
			return errors.New("timestamp must be an RFC 3339 time or unix milliseconds")
		}
		in.Time = t
	}
	return nil
}

func appcuesWebhookEvent(r json.RawMessage) (Input, error) {
	m, err := decodeObject(r)
	if err != nil {
		return Input{}, err
	}
	in := Input{ID: str(m, "id"), UserID: str(m, "user_id", "userId"), Name: str(m, "name")}
	if err := eventTime(m, &in); err != nil {
		return Input{}, err
	}
	attrs, err := object(m, "attributes", "properties")
	if err != nil {
		return Input{}, err
	}
	ctx, err := object(m, "context")
	if err != nil {
		return Input{}, err
	}
	in.Properties = attrs
	if u := str(ctx, "url"); u != "" && attrs["pageUrl"] == nil {
		attrs["pageUrl"] = u
	}
	if t := str(ctx, "title"); t != "" && attrs["pageTitle"] == nil {
		attrs["pageTitle"] = t
	}
	if strings.TrimSpace(in.Name) == "" {
		return Input{}, errors.New("name is required")
	}
	return in, nil
}

func commandBarWebhookEvent(r json.RawMessage) (Input, error) {
	m, err := decodeObject(r)
	if err != nil {
		return Input{}, err
	}
	in := Input{ID: str(m, "id", "event_id"), UserID: str(m, "user_id", "userId"), Name: str(m, "event", "type", "name")}
	if err := eventTime(m, &in); err != nil {
		return Input{}, err
	}
	if in.Properties, err = object(m, "properties", "metadata"); err != nil {
		return Input{}, err
	}
	if strings.TrimSpace(in.Name) == "" {
		return Input{}, errors.New("event is required")
	}
	return in, nil
}
