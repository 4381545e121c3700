// Package ids makes the random, prefixed identifiers seghub's resources carry
// ("seg_…", "conn_…"), so an id alone tells what it names.
package ids

import (
	"crypto/rand"
	"strings"
)

const alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"

// New returns prefix + "_" + 20 random base-36 characters (~103 bits).
func New(prefix string) string { return prefix + "_" + Random(20) }

// Random returns n random characters of [0-9a-z].
func Random(n int) string {
	return randomFrom(alphabet, n)
}

// Secret returns a high-entropy token of n characters of [0-9A-Za-z].
func Secret(n int) string {
	return randomFrom(alphabet+"ABCDEFGHIJKLMNOPQRSTUVWXYZ", n)
}

func randomFrom(chars string, n int) string {
	var b strings.Builder
	b.Grow(n)
	buf := make([]byte, n*2)
	for b.Len() < n {
		if _, err := rand.Read(buf); err != nil {
			panic("crypto/rand failed: " + err.Error())
		}
		// Rejection sampling keeps every character equally likely.
		limit := 256 - 256%len(chars)
		for _, c := range buf {
			if int(c) < limit && b.Len() < n {
				b.WriteByte(chars[int(c)%len(chars)])
			}
		}
	}
	return b.String()
}
