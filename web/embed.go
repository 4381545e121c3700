// Package web holds the built web console (dist/, committed like gen/ and
// rebuilt by `make web`), embedded so the binary needs nothing else to serve it.
package web

import (
	"embed"
	"io/fs"
)

//go:embed all:dist
var dist embed.FS

// Dist is the built console: index.html at its root, hashed files under assets/.
func Dist() fs.FS {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		panic(err) // "dist" is a literal embedded above
	}
	return sub
}
