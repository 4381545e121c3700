package server

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"
	"time"
)

func sign(secret string, ts time.Time, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	unix := strconv.FormatInt(ts.Unix(), 10)
	m.Write([]byte(unix))
	m.Write(body)
	return "ts:" + unix + ",hmac:" + hex.EncodeToString(m.Sum(nil))
}

// sameSignature compares headers that differ only in field order, spacing or
// hex case.
func sameSignature(a, b string) bool {
	norm := func(h string) string {
		var ts, mac string
		for _, part := range strings.Split(h, ",") {
			k, v, _ := strings.Cut(strings.TrimSpace(part), ":")
			switch k {
			case "ts":
				ts = v
			case "hmac":
				mac = strings.ToLower(v)
			}
		}
		n, _ := strconv.ParseInt(ts, 10, 64)
		return strconv.FormatInt(n, 10) + "|" + mac
	}
	return norm(a) == norm(b)
}

func TestVerifySignature(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"a":1}`)
	cases := []struct {
		name   string
		header string
		ok     bool
	}{
		{"exact", sign("s", now, body), true},
		{"4 minutes old", sign("s", now.Add(-4*time.Minute), body), true},
		{"6 minutes old", sign("s", now.Add(-6*time.Minute), body), false},
		{"from the future", sign("s", now.Add(6*time.Minute), body), false},
		{"other secret", sign("t", now, body), false},
		{"other body", sign("s", now, []byte(`{"a":2}`)), false},
		{"missing", "", false},
		{"no hmac", "ts:1800000000", false},
	}
	for _, c := range cases {
		if got := VerifySignature("s", c.header, body, now); got != c.ok {
			t.Errorf("%s: %v, want %v", c.name, got, c.ok)
		}
	}
}
