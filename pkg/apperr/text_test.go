package apperr

import (
	"strings"
	"testing"
)

func TestIdentifierProblem(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want string // substring of the problem; "" means accepted
	}{
		{"user-1", ""},
		{"Zoë 🙂 ünïcode", ""},
		{"literal \uFFFD replacement", ""},
		{"a\x00b", "U+0000 at byte 1"},
		{"\x1b[31mred", "U+001B at byte 0"},
		{"two\nlines", "U+000A"},
		{"tab\there", "U+0009"},
		{"del\x7f", "U+007F"},
		{"c1\u0085", "U+0085"},
		{"line\u2028sep", "U+2028"},
		{"para\u2029sep", "U+2029"},
		{"bad\xffutf8", "not valid UTF-8 (byte 3)"},
	} {
		got := IdentifierProblem(tc.in)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("IdentifierProblem(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

func TestTextAllowsLinesButNotNUL(t *testing.T) {
	t.Parallel()
	if p := TextProblem("first line\n\tsecond \x1b line"); p != "" {
		t.Errorf("free text refused: %s", p)
	}
	if p := TextProblem("a\x00b"); !strings.Contains(p, "NUL") {
		t.Errorf("NUL in free text: %q", p)
	}
	if p := TextProblem("a\xc3"); !strings.Contains(p, "UTF-8") {
		t.Errorf("invalid UTF-8 in free text: %q", p)
	}
}

func TestNameRefusesControlCharacters(t *testing.T) {
	t.Parallel()
	if _, err := Name("name", "trial\nusers", 100); Code(err).String() != "InvalidArgument" || !strings.Contains(err.Error(), "name: must not contain control characters") {
		t.Errorf("Name with newline: %v", err)
	}
	// Checked before trimming: a trailing control character is refused, not trimmed away.
	if _, err := Name("name", "trial\n", 100); err == nil {
		t.Error("Name with a trailing newline accepted")
	}
	if n, err := Name("name", "  trial users ", 100); err != nil || n != "trial users" {
		t.Errorf("Name = %q, %v", n, err)
	}
}
