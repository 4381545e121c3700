package grpcserver

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/seghub/seghub/pkg/apperr"
)

// freeText names the request fields that hold text rather than an id or a
// name: they may hold newlines and the like (not NUL). Every other string
// field, and every string map key (property names, credential names, segment
// ids), is an id or a name and refuses control characters, so a field added
// to a contract is checked without anyone remembering to.
var freeText = map[protoreflect.Name]bool{
	"description":  true, // segment description
	"message":      true, // connection status message
	"string_value": true, // property and condition values, google.protobuf.Value
}

// maxViolations bounds the violations one answer lists.
const maxViolations = 20

// CheckIdentifiers refuses a request whose ids or names hold control
// characters (or whose free text holds NUL), naming each field by its path,
// e.g. "events[3].user_id" or "users[0].properties". Paths are built only
// for violations: the check runs on every streamed event.
func CheckIdentifiers(m proto.Message) error {
	w := walker{path: make([]step, 0, 8)}
	w.message(m.ProtoReflect())
	if len(w.vs) > 0 {
		return apperr.InvalidFields(w.vs...)
	}
	return nil
}

// step is one element of a field path: a field, a list index or a map key.
type step struct {
	name  protoreflect.Name
	index int    // -1 unless a list element
	key   string // a map element's key
	isKey bool
}

type walker struct {
	path []step
	vs   []*errdetails.BadRequest_FieldViolation
}

func (w *walker) render() string {
	var b strings.Builder
	for i, s := range w.path {
		switch {
		case s.isKey:
			fmt.Fprintf(&b, "[%q]", s.key)
		case s.index >= 0:
			fmt.Fprintf(&b, "[%d]", s.index)
		default:
			if i > 0 {
				b.WriteByte('.')
			}
			b.WriteString(string(s.name))
		}
	}
	return b.String()
}

func (w *walker) violate(description string) {
	w.vs = append(w.vs, apperr.Violation(w.render(), description))
}

func (w *walker) full() bool { return len(w.vs) >= maxViolations }

func (w *walker) message(m protoreflect.Message) {
	if st, ok := m.Interface().(*structpb.Struct); ok {
		w.structFields(st)
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		w.path = append(w.path, step{name: fd.Name(), index: -1})
		switch {
		case fd.IsMap():
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				if fd.MapKey().Kind() == protoreflect.StringKind {
					if p := apperr.IdentifierProblem(k.String()); p != "" {
						w.violate(fmt.Sprintf("key %q %s", k.String(), p))
					}
				}
				w.path = append(w.path, step{key: k.String(), isKey: true})
				w.value(fd.MapValue(), mv)
				w.path = w.path[:len(w.path)-1]
				return !w.full()
			})
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len() && !w.full(); i++ {
				w.path = append(w.path, step{index: i})
				w.value(fd, l.Get(i))
				w.path = w.path[:len(w.path)-1]
			}
		default:
			w.value(fd, v)
		}
		w.path = w.path[:len(w.path)-1]
		return !w.full()
	})
}

// structFields walks event properties without reflection (its map
// iteration allocates per entry), the same way: names are ids, strings text.
func (w *walker) structFields(st *structpb.Struct) {
	w.path = append(w.path, step{name: "fields", index: -1})
	for k, v := range st.GetFields() {
		if p := apperr.IdentifierProblem(k); p != "" {
			w.violate(fmt.Sprintf("key %q %s", k, p))
		}
		w.path = append(w.path, step{key: k, isKey: true})
		w.structValue(v)
		w.path = w.path[:len(w.path)-1]
		if w.full() {
			break
		}
	}
	w.path = w.path[:len(w.path)-1]
}

func (w *walker) structValue(v *structpb.Value) {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		if p := apperr.TextProblem(k.StringValue); p != "" {
			w.path = append(w.path, step{name: "string_value", index: -1})
			w.violate(p)
			w.path = w.path[:len(w.path)-1]
		}
	case *structpb.Value_StructValue:
		w.path = append(w.path, step{name: "struct_value", index: -1})
		w.structFields(k.StructValue)
		w.path = w.path[:len(w.path)-1]
	case *structpb.Value_ListValue:
		w.path = append(w.path, step{name: "list_value", index: -1}, step{name: "values", index: -1})
		for i, e := range k.ListValue.GetValues() {
			w.path = append(w.path, step{index: i})
			w.structValue(e)
			w.path = w.path[:len(w.path)-1]
		}
		w.path = w.path[:len(w.path)-2]
	}
}

func (w *walker) value(fd protoreflect.FieldDescriptor, v protoreflect.Value) {
	if w.full() {
		return
	}
	switch fd.Kind() {
	case protoreflect.StringKind:
		problem := apperr.IdentifierProblem
		if freeText[fd.Name()] {
			problem = apperr.TextProblem
		}
		if p := problem(v.String()); p != "" {
			w.violate(p)
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		w.message(v.Message())
	}
}

// identifierChecks holds per-message fast paths: a function that reports
// whether a message is certainly clean, so the reflective walk is skipped on
// hot requests (a 1 000-check batch spent a third of its server time in it).
// When it says no, the walk runs and names the fields, so answers do not
// change.
type identifierChecks struct{ clean sync.Map } // protoreflect.FullName -> func(proto.Message) bool

func (c *identifierChecks) check(m proto.Message) error {
	if f, ok := c.clean.Load(m.ProtoReflect().Descriptor().FullName()); ok && f.(func(proto.Message) bool)(m) {
		return nil
	}
	return CheckIdentifiers(m)
}

// SkipCleanIdentifiers registers clean as the fast identifier check of
// requests of m's type: it must return true only when CheckIdentifiers would
// find nothing. Call it before Serve.
func (s *Server) SkipCleanIdentifiers(m proto.Message, clean func(proto.Message) bool) {
	s.ids.clean.Store(m.ProtoReflect().Descriptor().FullName(), clean)
}

// identifiersStream checks every message a client streams in.
type identifiersStream struct {
	grpc.ServerStream
	ids *identifierChecks
}

func (s identifiersStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if pm, ok := m.(proto.Message); ok {
		return s.ids.check(pm)
	}
	return nil
}

func (c *identifierChecks) validateStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	return h(srv, identifiersStream{ss, c})
}

// checkRequest is validateUnary's identifier check.
func (c *identifierChecks) checkRequest(_ context.Context, req any) error {
	if pm, ok := req.(proto.Message); ok {
		return c.check(pm)
	}
	return nil
}
