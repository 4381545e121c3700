package apperr

import (
	"fmt"
	"unicode/utf8"
)

// Ids and names refuse control characters: every C0 and C1 control (Unicode
// category Cc, including NUL, ESC, newline, tab and DEL), the line and
// paragraph separators U+2028 and U+2029 (they end lines in logs and
// JavaScript just as \n does), and invalid UTF-8. PostgreSQL cannot store
// NUL in text at all, and the others forge log lines and terminal output.

// IdentifierProblem describes why s cannot be an id or a name, or returns ""
// when it can.
func IdentifierProblem(s string) string {
	for i, r := range s {
		switch {
		case r == utf8.RuneError && !validRuneAt(s, i):
			return fmt.Sprintf("is not valid UTF-8 (byte %d)", i)
		case r < 0x20 || (r >= 0x7f && r <= 0x9f) || r == 0x2028 || r == 0x2029:
			return fmt.Sprintf("must not contain control characters (%U at byte %d)", r, i)
		}
	}
	return ""
}

// TextProblem describes why s cannot be free text (a description, a
// property value), or returns "": text may hold newlines and tabs, but
// neither NUL, which PostgreSQL refuses in text, nor invalid UTF-8.
func TextProblem(s string) string {
	for i, r := range s {
		switch {
		case r == utf8.RuneError && !validRuneAt(s, i):
			return fmt.Sprintf("is not valid UTF-8 (byte %d)", i)
		case r == 0:
			return fmt.Sprintf("must not contain NUL (byte %d)", i)
		}
	}
	return ""
}

// validRuneAt tells a literal U+FFFD from a decoding error at byte i.
func validRuneAt(s string, i int) bool {
	_, size := utf8.DecodeRuneInString(s[i:])
	return size == 3
}

// Identifier refuses an id or name holding a control character, with an
// InvalidArgument naming field (e.g. "events[3].user_id").
func Identifier(field, s string) error {
	if p := IdentifierProblem(s); p != "" {
		return Invalid(field, p)
	}
	return nil
}
