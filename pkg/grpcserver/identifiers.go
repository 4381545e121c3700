package grpcserver

import (
	"context"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

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
// e.g. "events[3].user_id" or "users[0].properties[\"plan\\n\"]".
func CheckIdentifiers(m proto.Message) error {
	var vs []*errdetails.BadRequest_FieldViolation
	walkStrings(m.ProtoReflect(), "", &vs)
	if len(vs) > 0 {
		return apperr.InvalidFields(vs...)
	}
	return nil
}

func walkStrings(m protoreflect.Message, prefix string, vs *[]*errdetails.BadRequest_FieldViolation) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		path := prefix + string(fd.Name())
		switch {
		case fd.IsMap():
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				elem := fmt.Sprintf("%s[%q]", path, k.String())
				if fd.MapKey().Kind() == protoreflect.StringKind {
					if p := apperr.IdentifierProblem(k.String()); p != "" {
						*vs = append(*vs, apperr.Violation(path, fmt.Sprintf("key %q %s", k.String(), p)))
					}
				}
				checkValue(fd.MapValue(), mv, elem, vs)
				return true
			})
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				checkValue(fd, l.Get(i), fmt.Sprintf("%s[%d]", path, i), vs)
			}
		default:
			checkValue(fd, v, path, vs)
		}
		return len(*vs) < maxViolations
	})
}

func checkValue(fd protoreflect.FieldDescriptor, v protoreflect.Value, path string, vs *[]*errdetails.BadRequest_FieldViolation) {
	if len(*vs) >= maxViolations {
		return
	}
	switch fd.Kind() {
	case protoreflect.StringKind:
		problem := apperr.IdentifierProblem
		if freeText[fd.Name()] {
			problem = apperr.TextProblem
		}
		if p := problem(v.String()); p != "" {
			*vs = append(*vs, apperr.Violation(path, p))
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		walkStrings(v.Message(), path+".", vs)
	}
}

// identifiersStream checks every message a client streams in.
type identifiersStream struct{ grpc.ServerStream }

func (s identifiersStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if pm, ok := m.(proto.Message); ok {
		return CheckIdentifiers(pm)
	}
	return nil
}

func validateStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	return h(srv, identifiersStream{ss})
}

// checkRequest is validateUnary's identifier check.
func checkRequest(_ context.Context, req any) error {
	if pm, ok := req.(proto.Message); ok {
		return CheckIdentifiers(pm)
	}
	return nil
}
