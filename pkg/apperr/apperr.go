// Package apperr carries domain errors with the gRPC code they map to, so that
// domain packages stay free of transport concerns yet errors map in one place.
package apperr

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
)

// Error is a domain error with a gRPC code and a message safe to show callers.
type Error struct {
	Code       codes.Code
	Message    string
	Violations []*errdetails.BadRequest_FieldViolation
	// Reason, when set, is sent as an errdetails.ErrorInfo so that transports
	// can tell kinds of error apart without reading the message.
	Reason string
	// Cause is logged but never shown to callers.
	Cause error
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return e.Message + ": " + e.Cause.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Cause }

// GRPCStatus lets status.FromError and grpc-go understand Error directly.
func (e *Error) GRPCStatus() *status.Status {
	st := status.New(e.Code, e.Message)
	var details []protoadapt.MessageV1
	if len(e.Violations) > 0 {
		details = append(details, &errdetails.BadRequest{FieldViolations: e.Violations})
	}
	if e.Reason != "" {
		details = append(details, &errdetails.ErrorInfo{Reason: e.Reason, Domain: Domain})
	}
	if len(details) > 0 {
		if d, err := st.WithDetails(details...); err == nil {
			return d
		}
	}
	return st
}

// Domain is the errdetails.ErrorInfo domain of seghub's reasons.
const Domain = "seghub"

// ReasonTooLarge marks a request refused for its size (bytes or items): REST
// answers it 413, gRPC InvalidArgument.
const ReasonTooLarge = "REQUEST_TOO_LARGE"

// TooLarge reports a request, message or stream over a size bound; the
// description names the bound, e.g. TooLarge("user_ids", "has 20000 ids; at
// most 10000 per call"). Nothing of such a request is applied.
func TooLarge(field, description string) *Error {
	e := Invalid(field, description)
	e.Reason = ReasonTooLarge
	return e
}

// IsTooLarge reports whether a gRPC status is a size refusal: TooLarge, or
// gRPC's own message-size limit (ResourceExhausted "... larger than max").
func IsTooLarge(st *status.Status) bool {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == Domain && info.GetReason() == ReasonTooLarge {
			return true
		}
	}
	return st.Code() == codes.ResourceExhausted && strings.Contains(st.Message(), "larger than max")
}

func newf(c codes.Code, format string, args ...any) *Error {
	return &Error{Code: c, Message: fmt.Sprintf(format, args...)}
}

// NotFound reports a missing resource, e.g. NotFound("segment %q not found", id).
func NotFound(format string, args ...any) *Error { return newf(codes.NotFound, format, args...) }

// AlreadyExists reports a conflict with an existing resource.
func AlreadyExists(format string, args ...any) *Error {
	return newf(codes.AlreadyExists, format, args...)
}

// FailedPrecondition reports a state that forbids the operation.
func FailedPrecondition(format string, args ...any) *Error {
	return newf(codes.FailedPrecondition, format, args...)
}

// ResourceExhausted reports a limit reached.
func ResourceExhausted(format string, args ...any) *Error {
	return newf(codes.ResourceExhausted, format, args...)
}

// PermissionDenied reports a caller that lacks a right.
func PermissionDenied(format string, args ...any) *Error {
	return newf(codes.PermissionDenied, format, args...)
}

// Unavailable reports a dependency that is down; callers may retry.
func Unavailable(format string, args ...any) *Error {
	return newf(codes.Unavailable, format, args...)
}

// Internal wraps an unexpected failure; the cause is logged, not returned.
func Internal(cause error, format string, args ...any) *Error {
	e := newf(codes.Internal, format, args...)
	e.Cause = cause
	return e
}

// Invalid reports one bad field: Invalid("name", "must not be blank").
func Invalid(field, description string) *Error {
	return InvalidFields(Violation(field, description))
}

// Violation builds one field violation for InvalidFields.
func Violation(field, description string) *errdetails.BadRequest_FieldViolation {
	return &errdetails.BadRequest_FieldViolation{Field: field, Description: description}
}

// InvalidFields reports several bad fields at once. The message names each.
func InvalidFields(vs ...*errdetails.BadRequest_FieldViolation) *Error {
	msg := "invalid argument"
	for i, v := range vs {
		if i == 0 {
			msg = ""
		} else {
			msg += "; "
		}
		msg += v.Field + ": " + v.Description
	}
	return &Error{Code: codes.InvalidArgument, Message: msg, Violations: vs}
}

// Code returns the gRPC code of err: its own for *Error and status errors,
// Unknown otherwise.
func Code(err error) codes.Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if st, ok := status.FromError(err); ok {
		return st.Code()
	}
	return codes.Unknown
}

// Name validates a display name: trimmed, not blank, at most max characters,
// no control characters. It returns the trimmed name.
func Name(field, name string, max int) (string, error) {
	if p := IdentifierProblem(name); p != "" {
		return "", Invalid(field, p)
	}
	name = strings.TrimSpace(name)
	switch {
	case name == "":
		return "", Invalid(field, "must not be blank")
	case utf8.RuneCountInString(name) > max:
		return "", Invalid(field, fmt.Sprintf("must be at most %d characters", max))
	}
	return name, nil
}
