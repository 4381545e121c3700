package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLayering keeps the architecture true: pkg never imports services, and a
// service never imports another service (it calls it over gRPC).
func TestLayering(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "github.com/seghub/seghub/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	const root = "github.com/seghub/seghub/"
	service := func(p string) string {
		rest, ok := strings.CutPrefix(p, root+"services/")
		if !ok {
			return ""
		}
		name, _, _ := strings.Cut(rest, "/")
		return name
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || !strings.HasPrefix(fields[0], root) {
			continue
		}
		pkg := fields[0]
		checked++
		for _, imp := range fields[1:] {
			if !strings.HasPrefix(imp, root) {
				continue
			}
			switch {
			case strings.HasPrefix(pkg, root+"pkg/") && strings.HasPrefix(imp, root+"services/"):
				t.Errorf("%s imports %s: pkg/ must not import services/", pkg, imp)
			case strings.HasPrefix(pkg, root+"gen/") && !strings.HasPrefix(imp, root+"gen/"):
				t.Errorf("%s imports %s: gen/ holds generated code only", pkg, imp)
			case service(pkg) != "" && service(imp) != "" && service(pkg) != service(imp):
				t.Errorf("%s imports %s: services call each other over gRPC", pkg, imp)
			}
		}
	}
	if checked < 10 {
		t.Fatalf("only %d seghub packages listed; is the workspace intact?", checked)
	}
}
