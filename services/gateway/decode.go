package gateway

import (
	"bytes"
	"io"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/proto"
)

// strictJSON decodes a REST body as one whole protojson document. grpc-gateway's
// own decoder reads the first JSON value and ignores what follows, so
// `{"users":[...]} anything` would be applied; here trailing data is refused.
// The body is already bounded by guardREST, so reading it whole is safe.
type strictJSON struct {
	*runtime.JSONPb
}

func (m strictJSON) NewDecoder(r io.Reader) runtime.Decoder {
	return runtime.DecoderFunc(func(v any) error {
		// bytes.Buffer grows by doubling: reading up to the limit allocates
		// about twice the limit, where io.ReadAll's gentler growth allocates
		// several times it.
		var buf bytes.Buffer
		if _, err := buf.ReadFrom(r); err != nil {
			return err
		}
		b := buf.Bytes()
		if len(bytes.TrimSpace(b)) == 0 {
			return io.EOF // an empty body is an empty request, as before
		}
		if msg, ok := v.(proto.Message); ok {
			return m.UnmarshalOptions.Unmarshal(b, msg)
		}
		return m.Unmarshal(b, v)
	})
}
