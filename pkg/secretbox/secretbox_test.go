package secretbox

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestSealOpen(t *testing.T) {
	t.Parallel()
	key := bytes.Repeat([]byte{7}, 32)
	b, err := New(key)
	if err != nil {
		t.Fatal(err)
	}
	sealed := b.Seal([]byte("api-secret"), []byte("conn_1"))
	if bytes.Contains(sealed, []byte("api-secret")) {
		t.Fatal("plaintext visible in ciphertext")
	}
	got, err := b.Open(sealed, []byte("conn_1"))
	if err != nil || string(got) != "api-secret" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if _, err := b.Open(sealed, []byte("conn_2")); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("moved to another row: %v", err)
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := b.Open(sealed, []byte("conn_1")); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("tampered: %v", err)
	}
	other, _ := New(bytes.Repeat([]byte{8}, 32))
	if _, err := other.Open(b.Seal([]byte("x"), nil), nil); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("wrong key: %v", err)
	}
	if _, err := New([]byte("short")); err == nil {
		t.Fatal("short key accepted")
	}
}

func TestLoadOrCreateFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "sub", "secret.key")
	s1, err := LoadOrCreateFile(path, 32)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode = %v, want 0600", st.Mode().Perm())
	}
	s2, err := LoadOrCreateFile(path, 32)
	if err != nil || s1 != s2 {
		t.Fatalf("second load = %q, %v; want %q", s2, err, s1)
	}
	k, err := ParseKey(s1)
	if err != nil || len(k) != 32 {
		t.Fatalf("ParseKey = %d bytes, %v", len(k), err)
	}
}
