// Package openapi embeds the merged OpenAPI document that buf generates next
// to this file. This file is the one hand-written file under gen/.
package openapi

import _ "embed"

// JSON is the OpenAPI v2 document for every seghub service.
//
//go:embed seghub.swagger.json
var JSON []byte
