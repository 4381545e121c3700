package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestBufBreakingAgainstReleasePoint keeps `make lint`'s buf breaking
// comparing the contracts with the last release point, not the previous
// commit: the Makefile reads the baseline from proto/BREAKING_BASELINE, which
// names a commit this branch descends from. With HEAD~1 as the baseline, a
// break spread over two commits would pass.
func TestBufBreakingAgainstReleasePoint(t *testing.T) {
	root := filepath.Join("..", "..")
	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	makefile := string(mk)
	if !strings.Contains(makefile, "BREAKING_BASELINE ?= $(shell cat proto/BREAKING_BASELINE)") {
		t.Error("the Makefile does not take its breaking baseline from proto/BREAKING_BASELINE")
	}
	lint := regexp.MustCompile(`(?ms)^lint:.*?\n\n`).FindString(makefile)
	if !strings.Contains(lint, "buf breaking --against") || !strings.Contains(lint, "$(BREAKING_BASELINE)") {
		t.Errorf("make lint does not run buf breaking against $(BREAKING_BASELINE):\n%s", lint)
	}
	for _, relative := range []string{"HEAD~", "HEAD^", "branch=main"} {
		if strings.Contains(lint, relative) {
			t.Errorf("make lint compares with %q, a moving point, not the release point:\n%s", relative, lint)
		}
	}
	raw, err := os.ReadFile(filepath.Join(root, "proto", "BREAKING_BASELINE"))
	if err != nil {
		t.Fatal(err)
	}
	baseline := strings.TrimSpace(string(raw))
	if !regexp.MustCompile(`^[0-9a-f]{40}$`).MatchString(baseline) {
		t.Fatalf("proto/BREAKING_BASELINE = %q; want one full commit id", baseline)
	}
	if err := exec.Command("git", "-C", root, "cat-file", "-e", baseline+"^{commit}").Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("release point %s is not in this clone (fetch the history): %v", baseline, err)
		}
		t.Skipf("release point %s is not in this clone: %v", baseline, err)
	}
	if out, err := exec.Command("git", "-C", root, "merge-base", "--is-ancestor", baseline, "HEAD").CombinedOutput(); err != nil {
		t.Fatalf("release point %s is not an ancestor of HEAD: %v %s", baseline, err, out)
	}
}
