package gateway

import (
	"bytes"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// consoleCSP allows nothing but seghub's own origin: the console loads no
// script, style, font or image from anywhere else, and no page may frame it.
const consoleCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; font-src 'self'; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// consoleReserved are the gateway's own paths; the console's fallback never
// answers below them, so an unknown API path is a 404 from the API, not a page.
var consoleReserved = []string{"/v1/", "/webhooks/", "/oauth/", "/ofrep/", "/openapi.json", "/healthz", "/readyz", "/metrics"}

// console serves the built web console from dist: files as they are (hashed
// assets cached for a year), and index.html for every other path so the
// console's own routes (/segments/seg_1, ...) load the app.
func console(dist fs.FS) (http.Handler, error) {
	index, err := fs.ReadFile(dist, "index.html")
	if err != nil {
		return nil, err
	}
	files := http.FileServerFS(dist)
	serveIndex := func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", "no-cache")
		h.Set("Content-Type", "text/html; charset=utf-8")
		http.ServeContent(w, r, "index.html", time.Time{}, bytes.NewReader(index))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, p := range consoleReserved {
			if r.URL.Path == strings.TrimSuffix(p, "/") || strings.HasPrefix(r.URL.Path, p) {
				http.NotFound(w, r)
				return
			}
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", consoleCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		clean := path.Clean("/" + r.URL.Path)
		if clean == "/" || clean == "/index.html" {
			serveIndex(w, r)
			return
		}
		name := strings.TrimPrefix(clean, "/")
		if _, err := fs.Stat(dist, name); err == nil {
			if strings.HasPrefix(name, "assets/") {
				// Vite names every asset by its content hash.
				h.Set("Cache-Control", "public, max-age=31536000, immutable")
			} else {
				h.Set("Cache-Control", "no-cache")
			}
			files.ServeHTTP(w, r)
			return
		}
		// A missing file (a stale asset, /favicon.ico) is a 404; anything
		// else is a console route.
		if strings.HasPrefix(name, "assets/") || strings.Contains(path.Base(name), ".") {
			http.NotFound(w, r)
			return
		}
		serveIndex(w, r)
	}), nil
}
