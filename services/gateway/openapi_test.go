package gateway

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// servedOpenAPI is the part of GET /openapi.json a newcomer reads first: the
// header, the security scheme, and per operation whether it overrides it.
type servedOpenAPI struct {
	Info struct {
		Title, Version, Description string
	}
	SecurityDefinitions map[string]struct {
		Type, In, Name, Description string
	}
	Security []map[string][]string
	Paths    map[string]map[string]struct {
		Summary     string
		Description string
		Security    *[]map[string][]string
	}
	Definitions map[string]struct {
		Description string
		Required    []string
		Properties  map[string]struct {
			Description string
			ReadOnly    bool
		}
	}
}

func getOpenAPI(t *testing.T) servedOpenAPI {
	t.Helper()
	g := newTestGateway(t)
	rec := g.serve(http.MethodGet, "/openapi.json", "", nil, 0)
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /openapi.json: %d %s", rec.Code, rec.Body)
	}
	var doc servedOpenAPI
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatalf("GET /openapi.json: %v", err)
	}
	return doc
}

// TestOpenAPIHeaderAndBearerScheme: the served document is titled seghub,
// versioned, described, and every operation requires the bearer API key.
func TestOpenAPIHeaderAndBearerScheme(t *testing.T) {
	doc := getOpenAPI(t)
	if doc.Info.Title != "seghub" {
		t.Errorf("info.title %q, want seghub", doc.Info.Title)
	}
	if doc.Info.Version != "v1" {
		t.Errorf("info.version %q, want v1", doc.Info.Version)
	}
	if d := doc.Info.Description; !strings.Contains(d, "Authorization: Bearer <key>") || !strings.Contains(d, "Appcues") {
		t.Errorf("info.description does not say what seghub is and how to authenticate: %q", d)
	}
	bearer, ok := doc.SecurityDefinitions["bearer"]
	if !ok {
		t.Fatalf("no 'bearer' security definition in %v", doc.SecurityDefinitions)
	}
	// Swagger 2.0 has no http bearer type: an apiKey in the Authorization header
	// whose value is "Bearer <key>" is how such a scheme is declared.
	if bearer.Type != "apiKey" || bearer.In != "header" || bearer.Name != "Authorization" || !strings.Contains(bearer.Description, "Bearer <key>") {
		t.Errorf("bearer scheme %+v, want an apiKey in the Authorization header sent as 'Bearer <key>'", bearer)
	}
	if len(doc.Security) != 1 || doc.Security[0]["bearer"] == nil {
		t.Errorf("document-wide security %v, want [{bearer: []}]", doc.Security)
	}
	ops := 0
	for path, methods := range doc.Paths {
		for method, op := range methods {
			ops++
			if op.Security != nil {
				t.Errorf("%s %s overrides the bearer requirement with %v", strings.ToUpper(method), path, *op.Security)
			}
		}
	}
	if ops == 0 {
		t.Fatal("the document has no operations")
	}
}

// TestOpenAPIDocumentsEveryContract: every seghub message, field and
// operation reaches the served document with its description, and field
// behaviour marks required request fields and server-set fields.
func TestOpenAPIDocumentsEveryContract(t *testing.T) {
	doc := getOpenAPI(t)
	seghub := 0
	for name, def := range doc.Definitions {
		if !strings.HasPrefix(name, "seghub.") {
			continue
		}
		seghub++
		if def.Description == "" {
			t.Errorf("definition %s has no description", name)
		}
		for prop, p := range def.Properties {
			if p.Description == "" {
				t.Errorf("%s.%s has no description", name, prop)
			}
		}
	}
	if seghub == 0 {
		t.Fatal("no seghub definitions in the document")
	}
	for path, methods := range doc.Paths {
		for method, op := range methods {
			if op.Summary == "" && op.Description == "" {
				t.Errorf("%s %s has no summary or description", strings.ToUpper(method), path)
			}
		}
	}
	for _, c := range []struct {
		def, field string
		required   bool // else read-only
	}{
		{"seghub.segmentsync.v1.CreateSegmentRequest", "name", true},
		{"seghub.admin.v1.CreateApiKeyRequest", "role", true},
		{"seghub.eventrelay.v1.Event", "user_id", true},
		{"seghub.segmentsync.v1.Segment", "segment_id", false},
		{"seghub.segmentsync.v1.Sync", "frozen_display_name", false},
		{"seghub.connector.v1.Connection", "status", false},
		{"seghub.connector.v1.Connection", "recurring_syncs_in_use", false},
		{"seghub.connector.v1.Connection", "recurring_syncs_limit", false},
	} {
		def, ok := doc.Definitions[c.def]
		if !ok {
			t.Errorf("no definition %s", c.def)
			continue
		}
		if c.required && !slices.Contains(def.Required, c.field) {
			t.Errorf("%s.%s is not required (required: %v)", c.def, c.field, def.Required)
		}
		if !c.required && !def.Properties[c.field].ReadOnly {
			t.Errorf("%s.%s is not read-only", c.def, c.field)
		}
	}
}
