// Package paging holds the page_size / page_token rules every list RPC shares:
// the default and maximum page size, and opaque tokens that carry a keyset
// cursor (base64url of JSON; the same format segmentsync's lists use).
package paging

import (
	"encoding/base64"
	"encoding/json"

	"github.com/seghub/seghub/pkg/apperr"
)

// Page sizes, documented on each list request in the protos.
const (
	DefaultSize = 100
	MaxSize     = 1000
)

// Size returns the page size to serve for a request's page_size: DefaultSize
// for 0, at most MaxSize; negative is InvalidArgument.
func Size(n int32) (int, error) {
	switch {
	case n < 0:
		return 0, apperr.Invalid("page_size", "must not be negative")
	case n == 0:
		return DefaultSize, nil
	case n > MaxSize:
		return MaxSize, nil
	}
	return int(n), nil
}

// Decode reads a page_token into cursor v; an empty token leaves v as it is
// (the first page). A token this API did not return is InvalidArgument.
func Decode(tok string, v any) error {
	if tok == "" {
		return nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err == nil {
		err = json.Unmarshal(b, v)
	}
	if err != nil {
		return apperr.Invalid("page_token", "is not a token this API returned")
	}
	return nil
}

// Parse is Size and Decode of one request: its page size, and its token
// read into cursor.
func Parse(size int32, token string, cursor any) (int, error) {
	n, err := Size(size)
	if err != nil {
		return 0, err
	}
	return n, Decode(token, cursor)
}

// Encode returns the next_page_token carrying cursor v.
func Encode(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}
