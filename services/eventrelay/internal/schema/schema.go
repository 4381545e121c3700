// Package schema holds each event source's events and their properties, and
// validates and normalises incoming events against them: Appcues events are
// accepted under their display or wire names and properties, and leave under
// the display names analytics shows ("Flow Started", "Flow ID").
package schema

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/seghub/seghub/pkg/apperr"
)

// Sources.
const (
	Appcues    = "appcues"
	CommandBar = "commandbar"
	API        = "api"
)

// Property types.
const (
	String    = "string"
	Number    = "number"
	Bool      = "bool"
	Timestamp = "timestamp"
	Object    = "object"
	List      = "list"
	// Scalar is a string, number or bool.
	Scalar = "scalar"
)

// Limits on one event.
const (
	MaxNameLen       = 255
	MaxUserIDLen     = 255
	MaxEventIDLen    = 128
	MaxProperties    = 200
	MaxPropertyKey   = 255
	MaxStringLen     = 8 << 10
	MaxFutureSkew    = 24 * time.Hour
	MaxPropertyDepth = 8
)

// Property is one property of an event.
type Property struct {
	Name, Wire, Type string
	Required         bool
	// Min, Max bound numbers when Max > Min.
	Min, Max float64
}

// Event is one event of a source's schema.
type Event struct {
	Source, Name string
	Aliases      []string
	Properties   []Property
}

// Schema of every source.
type Schema struct {
	events map[string]map[string]*Event // source → accepted name → event
	list   []*Event
}

// Appcues property vocabulary (display name, wire key, type). Wire keys follow
// Appcues' event attributes; where Appcues does not document one, it is assumed.
var (
	flowID          = Property{Name: "Flow ID", Wire: "flowId", Type: String}
	flowName        = Property{Name: "Flow Name", Wire: "flowName", Type: String}
	flowVersion     = Property{Name: "Flow Version", Wire: "flowVersion", Type: Scalar}
	timestampProp   = Property{Name: "Timestamp", Wire: "timestamp", Type: Timestamp}
	stepID          = Property{Name: "Step ID", Wire: "stepId", Type: String}
	stepType        = Property{Name: "Step Type", Wire: "stepType", Type: String}
	stepChildID     = Property{Name: "Step Child ID", Wire: "stepChildId", Type: String}
	stepChildNumber = Property{Name: "Step Child Number", Wire: "stepChildNumber", Type: Number}
	interactionType = Property{Name: "Interaction Type", Wire: "interactionType", Type: String}
	interaction     = Property{Name: "Interaction", Wire: "interaction", Type: Object}
	category        = Property{Name: "Category", Wire: "category", Type: String}
	destination     = Property{Name: "Destination", Wire: "destination", Type: String}
	formID          = Property{Name: "Form ID", Wire: "formId", Type: String}
	response        = Property{Name: "Response", Wire: "response", Type: List}
	fieldID         = Property{Name: "Field ID", Wire: "fieldId", Type: String}
	label           = Property{Name: "Label", Wire: "label", Type: String}
	value           = Property{Name: "Value", Wire: "value", Type: Scalar}
	pageTitle       = Property{Name: "Page Title", Wire: "pageTitle", Type: String}
	pageURL         = Property{Name: "Page URL", Wire: "pageUrl", Type: String}
	npsScore        = Property{Name: "NPS Score", Wire: "score", Type: Number, Min: 0, Max: 10}
	npsFeedback     = Property{Name: "NPS Feedback", Wire: "feedback", Type: String}
)

// appcuesVocabulary is every Appcues property above: an Appcues event outside
// the sixteen passes through with these checked and renamed where present.
var appcuesVocabulary = []Property{flowID, flowName, flowVersion, timestampProp, stepID, stepType, stepChildID, stepChildNumber,
	interactionType, interaction, category, destination, formID, response, fieldID, label, value, pageTitle, pageURL}

func props(ps ...Property) []Property { return ps }

// appcuesEvents are the sixteen Flow / Step / Form / NPS events Appcues sends
// to analytics, with their wire names. Appcues sends each property "when
// provided", so none is required; a property present is type-checked.
func appcuesEvents() []*Event {
	flow := props(flowID, flowName, flowVersion, timestampProp)
	step := props(flowID, flowName, flowVersion, timestampProp, stepID, stepType)
	nps := props(timestampProp, pageTitle, pageURL)
	ev := func(name, wire string, ps []Property) *Event {
		return &Event{Source: Appcues, Name: name, Aliases: []string{"appcues:" + wire}, Properties: ps}
	}
	return []*Event{
		ev("Flow Started", "flow_started", flow),
		ev("Flow Completed", "flow_completed", flow),
		ev("Flow Skipped", "flow_skipped", flow),
		ev("Flow Aborted", "flow_aborted", flow),
		ev("Step Started", "step_started", step),
		ev("Step Completed", "step_completed", step),
		ev("Step Skipped", "step_skipped", step),
		ev("Step Aborted", "step_aborted", step),
		ev("Step Interacted", "step_interacted", props(flowID, flowName, flowVersion, timestampProp, stepChildID, stepChildNumber, stepType, interactionType, interaction, category, destination)),
		ev("Form Submitted", "form_submitted", props(flowID, flowName, flowVersion, timestampProp, stepID, stepType, interactionType, formID, response)),
		ev("Form Field Submitted", "form_field_submitted", props(flowID, flowName, flowVersion, timestampProp, stepID, stepType, interactionType, category, formID, fieldID, label, value)),
		ev("NPS Survey Started", "nps_survey_started", nps),
		ev("NPS Score Submitted", "nps_score", append(append([]Property(nil), nps...), npsScore)),
		ev("NPS Feedback Submitted", "nps_feedback", append(append([]Property(nil), nps...), npsFeedback)),
		ev("NPS Ask Me Later Selected", "nps_ask_me_later_selected", nps),
		// Wire name assumed: Appcues documents the event, not its key.
		ev("NPS Update Score Selected", "nps_clicked_update_nps_score", append(append([]Property(nil), nps...), npsScore)),
	}
}

// commandBarEvents are CommandBar's events. CommandBar documents the names;
// the property keys below are the ones its integrations show, and assumed
// where not documented. Unknown properties pass through.
func commandBarEvents() []*Event {
	s := func(n string) Property { return Property{Name: n, Wire: n, Type: String} }
	nudge := props(s("nudge_id"), s("nudge_slug"), Property{Name: "step", Wire: "step", Type: Number})
	quest := props(s("questlist_id"), s("questlist_slug"))
	ev := func(name string, ps []Property) *Event { return &Event{Source: CommandBar, Name: name, Properties: ps} }
	return []*Event{
		ev("opened", props(s("trigger"))),
		ev("closed", props(s("trigger"))),
		ev("abandoned_search", props(s("inputText"))),
		ev("command_suggestion", props(s("text"))),
		ev("command_execution", props(Property{Name: "command", Wire: "command", Type: Scalar}, s("commandName"), s("category"), s("source"))),
		ev("no_results_for_query", props(s("inputText"))),
		ev("preview_shown", props(s("commandName"))),
		ev("nudge_shown", nudge),
		ev("nudge_clicked", nudge),
		ev("nudge_snoozed", nudge),
		ev("nudge_completed", nudge),
		ev("nudge_dismissed", nudge),
		ev("survey_response", append(append([]Property(nil), nudge...), Property{Name: "response", Wire: "response", Type: "any"})),
		ev("questlist_shown", quest),
		ev("questlist_engagement", append(append([]Property(nil), quest...), s("action"))),
		ev("questlist_item_engagement", append(append([]Property(nil), quest...), s("item_id"), s("action"))),
	}
}

// Default returns the built-in schema.
func Default() *Schema {
	s := &Schema{events: map[string]map[string]*Event{Appcues: {}, CommandBar: {}, API: {}}}
	for _, e := range append(appcuesEvents(), commandBarEvents()...) {
		s.list = append(s.list, e)
		s.events[e.Source][e.Name] = e
		for _, a := range e.Aliases {
			s.events[e.Source][a] = e
		}
	}
	return s
}

// Sources lists the known sources.
func (s *Schema) Sources() []string { return []string{Appcues, CommandBar, API} }

// Events lists the schema's events, of one source or of all ("").
func (s *Schema) Events(source string) []*Event {
	var out []*Event
	for _, e := range s.list {
		if source == "" || e.Source == source {
			out = append(out, e)
		}
	}
	return out
}

// Lookup finds an event by any of its accepted names.
func (s *Schema) Lookup(source, name string) (*Event, bool) {
	e, ok := s.events[source][name]
	return e, ok
}

// lookupFold finds an event by an accepted name in any letter case, so that
// "flow started" is Flow Started rather than a pass-through event of its own.
func (s *Schema) lookupFold(source, name string) (*Event, bool) {
	for n, e := range s.events[source] {
		if strings.EqualFold(n, name) {
			return e, true
		}
	}
	return nil, false
}

// Input is an event as received.
type Input struct {
	ID, Source, ConnectionID, UserID, Name string
	// Time is zero when the sender gave none.
	Time       time.Time
	Properties map[string]any
}

// Normalized is a valid event ready to store: delivered name and display
// property names.
type Normalized struct {
	Input
	// AppcuesUserID is the Appcues identity the event carries (Appcues source).
	AppcuesUserID string
}

// FieldError names the field of an event that is wrong.
type FieldError struct{ Field, Reason string }

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Validate checks in against its source's schema and returns it normalised.
// now is the receive time (used for a missing timestamp and the future bound).
func (s *Schema) Validate(in Input, now time.Time) (Normalized, *FieldError) {
	// Ids and names reach SQL, log lines and destinations' Idempotency-Key
	// headers: checked before trimming, which would hide some.
	for _, f := range []struct{ field, value string }{{"source", in.Source}, {"event_id", in.ID}, {"connection_id", in.ConnectionID}, {"user_id", in.UserID}, {"name", in.Name}} {
		if p := apperr.IdentifierProblem(f.value); p != "" {
			return Normalized{}, fieldErr(f.field, "%s", p)
		}
	}
	in.Source = strings.ToLower(strings.TrimSpace(in.Source))
	if in.Source == "" {
		in.Source = API
	}
	if _, ok := s.events[in.Source]; !ok {
		return Normalized{}, fieldErr("source", "unknown source %q (one of %s)", in.Source, strings.Join(s.Sources(), ", "))
	}
	in.ID, in.ConnectionID = strings.TrimSpace(in.ID), strings.TrimSpace(in.ConnectionID)
	if len(in.ID) > MaxEventIDLen {
		return Normalized{}, fieldErr("event_id", "is longer than %d characters", MaxEventIDLen)
	}
	in.UserID = strings.TrimSpace(in.UserID)
	switch {
	case in.UserID == "":
		return Normalized{}, fieldErr("user_id", "is required")
	case len(in.UserID) > MaxUserIDLen:
		return Normalized{}, fieldErr("user_id", "is longer than %d characters", MaxUserIDLen)
	}
	in.Name = strings.TrimSpace(in.Name)
	if in.Name == "" {
		return Normalized{}, fieldErr("name", "is required")
	}
	if len(in.Name) > MaxNameLen {
		return Normalized{}, fieldErr("name", "is longer than %d characters", MaxNameLen)
	}
	if in.Time.IsZero() {
		in.Time = now
	} else if in.Time.After(now.Add(MaxFutureSkew)) {
		return Normalized{}, fieldErr("timestamp", "is more than %v in the future", MaxFutureSkew)
	}
	if len(in.Properties) > MaxProperties {
		return Normalized{}, fieldErr("properties", "has %d properties; at most %d", len(in.Properties), MaxProperties)
	}
	for k, v := range in.Properties {
		if k == "" || len(k) > MaxPropertyKey {
			return Normalized{}, fieldErr("properties", "property names must be 1 to %d characters", MaxPropertyKey)
		}
		if p := apperr.IdentifierProblem(k); p != "" {
			return Normalized{}, fieldErr("properties", "property name %q %s", k, p)
		}
		if err := checkValue(v, 0); err != "" {
			return Normalized{}, fieldErr("properties."+k, "%s", err)
		}
	}
	out := Normalized{Input: in}
	if in.Source == API {
		return out, nil
	}
	ev, ok := s.Lookup(in.Source, in.Name)
	if !ok && in.Source == Appcues {
		ev, ok = s.lookupFold(Appcues, in.Name)
	}
	if !ok && in.Source == Appcues {
		// Appcues adds events (Flow Error, Step Child Activated …) beyond
		// the documented sixteen; dropping them would lose what users did.
		ev = &Event{Source: Appcues, Name: appcuesDisplayName(in.Name), Properties: appcuesVocabulary}
	} else if !ok {
		return Normalized{}, fieldErr("name", "%q is not a %s event (see ListEventSchemas)", in.Name, in.Source)
	}
	out.Name = ev.Name
	if in.Source == Appcues {
		if id, ok := in.Properties["appcuesUserID"].(string); ok && strings.TrimSpace(id) != "" {
			if p := apperr.IdentifierProblem(id); p != "" {
				return Normalized{}, fieldErr("properties.appcuesUserID", "%s", p)
			}
			if id = strings.TrimSpace(id); len(id) > MaxUserIDLen {
				return Normalized{}, fieldErr("properties.appcuesUserID", "is longer than %d characters", MaxUserIDLen)
			}
			out.AppcuesUserID = id
		} else {
			out.AppcuesUserID = in.UserID
		}
	}
	// Rename wire keys to display names; check the declared ones.
	props := make(map[string]any, len(in.Properties))
	for k, v := range in.Properties {
		props[k] = v
	}
	for _, p := range ev.Properties {
		v, has := props[p.Name]
		if wv, ok := props[p.Wire]; ok && p.Wire != p.Name {
			if !has {
				v, has = wv, true
			}
			delete(props, p.Wire)
		}
		if !has || v == nil {
			if p.Required {
				return Normalized{}, fieldErr("properties."+p.Name, "is required for %s", ev.Name)
			}
			delete(props, p.Name)
			continue
		}
		nv, err := coerce(p, v)
		if err != "" {
			return Normalized{}, fieldErr("properties."+p.Name, "%s", err)
		}
		props[p.Name] = nv
	}
	delete(props, "appcuesUserID")
	out.Properties = props
	return out, nil
}

// appcuesDisplayName writes an Appcues wire name ("appcues:step_child_activated")
// the way analytics shows the documented events ("Step Child Activated"); any
// other name is kept as sent.
func appcuesDisplayName(name string) string {
	wire, ok := strings.CutPrefix(name, "appcues:")
	if !ok || wire == "" {
		return name
	}
	words := strings.Split(wire, "_")
	for i, w := range words {
		if r, n := utf8.DecodeRuneInString(w); n > 0 {
			words[i] = string(unicode.ToUpper(r)) + w[n:]
		}
	}
	return strings.Join(words, " ")
}

func checkValue(v any, depth int) string {
	if depth > MaxPropertyDepth {
		return fmt.Sprintf("nests deeper than %d levels", MaxPropertyDepth)
	}
	switch x := v.(type) {
	case string:
		if len(x) > MaxStringLen {
			return fmt.Sprintf("is longer than %d bytes", MaxStringLen)
		}
		return apperr.TextProblem(x)
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return "must be a finite number"
		}
	case map[string]any:
		for k, e := range x {
			if p := apperr.IdentifierProblem(k); p != "" {
				return fmt.Sprintf("property name %q %s", k, p)
			}
			if err := checkValue(e, depth+1); err != "" {
				return err
			}
		}
	case []any:
		for _, e := range x {
			if err := checkValue(e, depth+1); err != "" {
				return err
			}
		}
	}
	return ""
}

// coerce checks v against p's type; timestamps become RFC 3339 strings.
func coerce(p Property, v any) (any, string) {
	switch p.Type {
	case String:
		if s, ok := v.(string); ok {
			return s, ""
		}
		if f, ok := v.(float64); ok && (p.Wire == "flowId" || strings.HasSuffix(p.Name, " ID") || strings.HasSuffix(p.Name, "_id")) {
			// Ids sent as numbers; fmt.Sprint would write 1234567 as "1.234567e+06".
			return strconv.FormatFloat(f, 'f', -1, 64), ""
		}
		return nil, "must be a string"
	case Number:
		f, ok := v.(float64)
		if !ok {
			return nil, "must be a number"
		}
		if p.Max > p.Min && (f < p.Min || f > p.Max) {
			return nil, fmt.Sprintf("must be between %g and %g", p.Min, p.Max)
		}
		return f, ""
	case Bool:
		if _, ok := v.(bool); ok {
			return v, ""
		}
		return nil, "must be true or false"
	case Scalar:
		switch v.(type) {
		case string, float64, bool:
			return v, ""
		}
		return nil, "must be a string, number or boolean"
	case Object:
		if _, ok := v.(map[string]any); ok {
			return v, ""
		}
		return nil, "must be an object"
	case List:
		if _, ok := v.([]any); ok {
			return v, ""
		}
		return nil, "must be a list"
	case Timestamp:
		t, ok := ParseTime(v)
		if !ok {
			return nil, "must be an RFC 3339 time or unix milliseconds"
		}
		return t.UTC().Format(time.RFC3339Nano), ""
	}
	return v, ""
}

// maxUnixMilli is 10000-01-01T00:00:00Z in unix milliseconds.
const maxUnixMilli = 253402300800000

// ParseTime reads an RFC 3339 string or a unix time in milliseconds (Appcues'
// and CommandBar's form; values below 1e11 are taken as seconds).
func ParseTime(v any) (time.Time, bool) {
	switch x := v.(type) {
	case string:
		t, err := time.Parse(time.RFC3339Nano, x)
		return t, err == nil
	case float64:
		// Past year 9999 RFC 3339 cannot write it, and past 2^63 the int64
		// conversion below overflows into a time before 1970.
		if x <= 0 || x >= maxUnixMilli || math.IsNaN(x) || math.IsInf(x, 0) {
			return time.Time{}, false
		}
		if x < 1e11 {
			return time.Unix(int64(x), 0), true
		}
		return time.UnixMilli(int64(x)), true
	}
	return time.Time{}, false
}
