// Package openapiroutes enumerates the operations of the served OpenAPI
// document, so that tests probing "every REST route" cover a new route as soon
// as the document offers it, without a list of their own to keep current.
package openapiroutes

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/seghub/seghub/gen/openapi"
)

// Parameter is one OpenAPI v2 operation parameter: the fields the route
// walkers read.
type Parameter struct {
	Name, In, Type, Format string
	Enum                   []any
	Schema                 map[string]any
	Items                  map[string]any
}

// Route is one operation: an upper-case method and a path template such as
// /v1/segments/{segment_id}.
type Route struct {
	Method, Path string
	Parameters   []Parameter
}

// HasBody reports whether the operation takes a request body.
func (r Route) HasBody() bool {
	return slices.ContainsFunc(r.Parameters, func(p Parameter) bool { return p.In == "body" })
}

var pathParam = regexp.MustCompile(`\{[^}]+\}`)

// Fill returns the path with every path parameter replaced by value.
func (r Route) Fill(value string) string {
	return pathParam.ReplaceAllString(r.Path, value)
}

// Document is the routes of an OpenAPI v2 document, in method-and-path order,
// and its definitions for following a body schema's $ref.
type Document struct {
	Routes      []Route
	Definitions map[string]map[string]any
}

// Parse reads an OpenAPI v2 document.
func Parse(doc []byte) (Document, error) {
	var d struct {
		Paths       map[string]map[string]struct{ Parameters []Parameter }
		Definitions map[string]map[string]any
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		return Document{}, fmt.Errorf("OpenAPI document: %w", err)
	}
	out := Document{Definitions: d.Definitions}
	for path, ops := range d.Paths {
		for method, op := range ops {
			out.Routes = append(out.Routes, Route{Method: strings.ToUpper(method), Path: path, Parameters: op.Parameters})
		}
	}
	slices.SortFunc(out.Routes, func(a, b Route) int {
		return strings.Compare(a.Path+" "+a.Method, b.Path+" "+b.Method)
	})
	return out, nil
}

// Served parses the document the gateway serves at /openapi.json.
func Served() (Document, error) { return Parse(openapi.JSON) }

// Every returns the served document's routes for a test that probes each of
// them. It fails the test when the document has fewer than 40 routes: a
// generator change that drops routes must not shrink such a test to nothing.
func Every(tb testing.TB) []Route {
	tb.Helper()
	doc, err := Served()
	if err != nil {
		tb.Fatal(err)
	}
	if len(doc.Routes) < 40 {
		tb.Fatalf("only %d routes in the OpenAPI document", len(doc.Routes))
	}
	return doc.Routes
}
