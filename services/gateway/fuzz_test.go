package gateway

import (
	"bytes"
	"context"
	"net/http"
	"sync"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	eventrelayv1 "github.com/seghub/seghub/gen/seghub/eventrelay/v1"
	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
	"github.com/seghub/seghub/pkg/config"
)

// ingestRecorder stands in for the ingest RPCs and keeps what reached them.
type ingestRecorder struct {
	eventrelayv1.UnimplementedEventRelayServiceServer
	segmentsyncv1.UnimplementedSegmentSyncServiceServer
	mu   sync.Mutex
	got  []proto.Message
	fail bool
}

func (r *ingestRecorder) keep(m proto.Message) {
	r.mu.Lock()
	r.got = append(r.got, proto.Clone(m))
	r.mu.Unlock()
}

func (r *ingestRecorder) take() []proto.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	got := r.got
	r.got = nil
	return got
}

func (r *ingestRecorder) Track(_ context.Context, req *eventrelayv1.TrackRequest) (*eventrelayv1.TrackResponse, error) {
	r.keep(req)
	return &eventrelayv1.TrackResponse{}, nil
}

func (r *ingestRecorder) TrackBatch(_ context.Context, req *eventrelayv1.TrackBatchRequest) (*eventrelayv1.TrackBatchResponse, error) {
	r.keep(req)
	return &eventrelayv1.TrackBatchResponse{}, nil
}

func (r *ingestRecorder) UpsertUsers(_ context.Context, req *segmentsyncv1.UpsertUsersRequest) (*segmentsyncv1.UpsertUsersResponse, error) {
	r.keep(req)
	return &segmentsyncv1.UpsertUsersResponse{}, nil
}

var ingestRoutes = []struct {
	path string
	msg  func() proto.Message
}{
	{"/v1/events:track", func() proto.Message { return &eventrelayv1.TrackRequest{} }},
	{"/v1/events:trackBatch", func() proto.Message { return &eventrelayv1.TrackBatchRequest{} }},
	{"/v1/users:upsert", func() proto.Message { return &segmentsyncv1.UpsertUsersRequest{} }},
}

// FuzzRESTIngest drives the REST JSON decoding of the ingest routes with
// arbitrary bodies: a body over the limit is 413, one that is not exactly one
// valid protojson document is 400, and in both cases nothing reaches the
// service; an accepted body reaches it exactly as protojson reads it. Never
// a 5xx, never a panic.
func FuzzRESTIngest(f *testing.F) {
	const limit = 8 << 10
	e := apptest.New(f, apptest.Options{Configure: func(c *config.Config) { c.RESTMaxBody = limit }})
	rec := &ingestRecorder{}
	eventrelayv1.RegisterEventRelayServiceServer(e.Server.Server, rec)
	segmentsyncv1.RegisterSegmentSyncServiceServer(e.Server.Server, rec)
	e.Start()
	g, err := New(context.Background(), e.P)
	if err != nil {
		f.Fatal(err)
	}
	handler := g.Handler()
	key := e.A.Member

	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		r := ingestRoutes[int(route)%len(ingestRoutes)]
		req, _ := http.NewRequest("POST", r.path, bytes.NewReader(body))
		if route&0x80 != 0 {
			req.ContentLength = -1 // streamed: the limit is met while reading
		}
		req.Header.Set("Authorization", "Bearer "+key)
		w := &statusRecorder{header: http.Header{}}
		handler.ServeHTTP(w, req)
		got := rec.take()

		want := r.msg()
		decodeErr := protojson.Unmarshal(body, want)
		if len(bytes.TrimSpace(body)) == 0 {
			decodeErr = nil // no body is an empty request
		}
		switch {
		case len(body) > limit:
			if w.code != http.StatusRequestEntityTooLarge || len(got) != 0 {
				t.Fatalf("%s with %d bytes: %d, %d calls; want 413 and none", r.path, len(body), w.code, len(got))
			}
		case decodeErr != nil:
			if w.code != http.StatusBadRequest || len(got) != 0 {
				t.Fatalf("%s %q (protojson: %v): %d %s, %d calls; want 400 and none", r.path, body, decodeErr, w.code, w.body.String(), len(got))
			}
		default:
			if w.code != http.StatusOK || len(got) != 1 || !proto.Equal(got[0], want) {
				t.Fatalf("%s %q: %d %s; service got %v, want %v", r.path, body, w.code, w.body.String(), got, want)
			}
		}
	})
}

// statusRecorder is a minimal ResponseWriter (httptest's keeps more than the
// fuzz loop needs).
type statusRecorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (s *statusRecorder) Header() http.Header { return s.header }
func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
}
func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.body.Write(b)
}
