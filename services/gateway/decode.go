package gateway

import (
	"bytes"
	"errors"
	"io"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/proto"
)

// strictJSON decodes a REST body as one whole protojson document. grpc-gateway's
// own decoder reads the first JSON value and ignores what follows, so
// `{"users":[...]} anything` would be applied; here trailing data is refused.
// The body is bounded by guardREST to limit bytes, so reading it whole is safe.
type strictJSON struct {
	*runtime.JSONPb
	limit int64
}

func (m strictJSON) NewDecoder(r io.Reader) runtime.Decoder {
	return runtime.DecoderFunc(func(v any) error {
		b, err := readBody(r, m.limit)
		if err != nil {
			return err
		}
		if len(bytes.TrimSpace(b)) == 0 {
			return io.EOF // an empty body is an empty request, as before
		}
		if msg, ok := v.(proto.Message); ok {
			return m.UnmarshalOptions.Unmarshal(b, msg)
		}
		return m.Unmarshal(b, v)
	})
}

// readBody reads r to its end into a buffer that doubles but never past
// limit+1 bytes (one more than a body may hold, so that going over is seen):
// a body read to the limit allocates about twice the limit, where
// io.ReadAll's growth allocates several times it.
func readBody(r io.Reader, limit int64) ([]byte, error) {
	b := make([]byte, 0, min(512, limit+1))
	for {
		if len(b) == cap(b) {
			if int64(cap(b)) > limit {
				// Full at limit+1 bytes: only an error or the end may follow.
				var one [1]byte
				if n, err := r.Read(one[:]); n > 0 || err == nil {
					return nil, errors.New("request body over its limit")
				} else if err == io.EOF {
					return b, nil
				} else {
					return nil, err
				}
			}
			b = append(make([]byte, 0, min(2*int64(cap(b)), limit+1)), b...)
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return nil, err
		}
	}
}
