package destinations

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
)

// ContentKey returns the idempotency key of b within scope (its sync run):
// scope and a digest of the membership payload every segment adapter sends
// — segment, display name, and the identities added and removed, in order.
// A batch retried, or resumed by a later attempt of the run, with the same
// content gets the same key, and a destination answering the key from its
// memory answers for exactly this content; other content gets another key.
// Page, TotalPages and TaskID are not part of it: they place the batch in
// its task, which the Heap-format webhook keys on instead.
func ContentKey(scope string, b SegmentBatch) string {
	d := NewDigest()
	d.String(b.SegmentID)
	d.String(b.DisplayName)
	for _, ids := range [][]Identity{b.Add, b.Remove} {
		d.Int(len(ids))
		for _, id := range ids {
			d.String(id.ID)
		}
	}
	return scope + "-" + d.Sum()
}

// Digest hashes a sequence of fields unambiguously: each string is
// length-prefixed, so ["ab","c"] and ["a","bc"] differ.
type Digest struct {
	h   hash.Hash
	buf []byte
}

// NewDigest returns an empty digest.
func NewDigest() *Digest { return &Digest{h: sha256.New(), buf: make([]byte, 0, 4096)} }

// String adds s.
func (d *Digest) String(s string) {
	d.Int(len(s))
	d.buf = append(d.buf, s...)
	d.flush(false)
}

// Int adds n.
func (d *Digest) Int(n int) {
	d.buf = binary.AppendUvarint(d.buf, uint64(n))
	d.flush(false)
}

// Bool adds v.
func (d *Digest) Bool(v bool) {
	if v {
		d.buf = append(d.buf, 1)
	} else {
		d.buf = append(d.buf, 0)
	}
	d.flush(false)
}

// flush hands buffered bytes to the hash in large writes (one call per
// field would cost more than the hashing on million-identity plans).
func (d *Digest) flush(all bool) {
	if all || len(d.buf) >= 4096 {
		d.h.Write(d.buf)
		d.buf = d.buf[:0]
	}
}

// Sum returns the first 128 bits of the digest in hex.
func (d *Digest) Sum() string {
	d.flush(true)
	return hex.EncodeToString(d.h.Sum(nil)[:16])
}
