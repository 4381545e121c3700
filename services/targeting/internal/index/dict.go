package index

import (
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math"
)

// dict is an environment's user dictionary, user id ↔ dense id, in ~33 B a
// user with 12-byte ids where two Go maps of strings took ~128 B: every user is one
// record in a byte arena (its dense id in 4 bytes, a uvarint length, the id
// bytes), offs maps a dense id to its record (segmentsync's dense ids are
// dense, so a slice), and an open-addressing table of record offsets maps an
// id to its record through its hash, so a lookup by id reads the table and
// one record. No per-user pointers: the garbage collector skips users too.
// offs costs 4 B per dense id up to the highest one seen, which is why this
// relies on segmentsync numbering each environment's users densely.
//
// It is not safe for concurrent use: Env guards it with its RWMutex, and the
// read methods (dense, name, len) never write.
type dict struct {
	seed maphash.Seed
	// arena holds the records; arena[0] is unused so that offset 0 means none.
	arena []byte
	// offs[d] is the offset in arena of dense id d's record, 0 when none.
	offs []uint32
	// table is a linear-probing hash set of record offsets (0 empty, tomb
	// deleted), a power of two long, at most 3/4 used (tombstones included).
	table []uint32
	live  int // ids held
	used  int // table slots not empty (live + tombstones)
	dead  int // arena bytes of removed ids, reclaimed by compact
}

const (
	tomb = math.MaxUint32
	// maxArena keeps every offset a uint32 other than tomb.
	maxArena = math.MaxUint32 - 1
)

func newDict() *dict { return &dict{seed: maphash.MakeSeed(), arena: []byte{0}} }

// len returns the number of users held.
func (t *dict) len() int { return t.live }

// record returns the dense id and the user id of the record at offset o.
func (t *dict) record(o uint32) (uint32, []byte) {
	d := binary.LittleEndian.Uint32(t.arena[o:])
	o += 4
	if n := t.arena[o]; n < 0x80 { // one-byte length: ids under 128 bytes
		return d, t.arena[o+1 : o+1+uint32(n)]
	}
	n, k := binary.Uvarint(t.arena[o:])
	start := o + uint32(k)
	return d, t.arena[start : start+uint32(n)]
}

func (t *dict) idAt(o uint32) []byte {
	_, id := t.record(o)
	return id
}

// dense returns the dense id of id. It does not allocate.
func (t *dict) dense(id string) (uint32, bool) {
	if len(t.table) == 0 {
		return 0, false
	}
	h := maphash.String(t.seed, id)
	return lookup(t, id, h, h&uint64(len(t.table)-1))
}

// lookup finds id, whose hash is h, probing from slot i. It does not allocate.
func lookup[S string | []byte](t *dict, id S, h, i uint64) (uint32, bool) {
	mask := uint64(len(t.table) - 1)
	for ; ; i = (i + 1) & mask {
		switch o := t.table[i]; o {
		case 0:
			return 0, false
		case tomb:
		default:
			// The conversions are only compared, so they do not allocate.
			if d, rid := t.record(o); string(rid) == string(id) {
				return d, true
			}
		}
	}
}

// lookahead is how many ids denseMany hashes and starts reading ahead.
const lookahead = 16

// denseMany calls found(i, d) for each ids[i] held, in order. A dictionary
// larger than the caches costs a lookup two memory misses (its table slot,
// then its record) that one lookup after the other wait out in turn; here
// the first slot and record of a group of ids are read before any is
// compared, so their misses overlap.
func (t *dict) denseMany(ids [][]byte, found func(i int, d uint32)) {
	if len(t.table) == 0 {
		return
	}
	mask := uint64(len(t.table) - 1)
	var hs [lookahead]uint64
	var first [lookahead]uint32
	var lens [lookahead]byte
	for base := 0; base < len(ids); base += lookahead {
		group := ids[base:min(base+lookahead, len(ids))]
		for j, id := range group {
			h := maphash.Bytes(t.seed, id)
			o := t.table[h&mask]
			hs[j], first[j], lens[j] = h, o, 0
			if o != 0 && o != tomb {
				lens[j] = t.arena[o+4] // the record's length byte: reads it in
			}
		}
		for j, id := range group {
			o := first[j]
			if o == 0 {
				continue
			}
			// A one-byte length that differs rules the first record out
			// without comparing; longer ids take the full comparison.
			if o != tomb && (lens[j] >= 0x80 || int(lens[j]) == len(id)) {
				if d, rid := t.record(o); string(rid) == string(id) {
					found(base+j, d)
					continue
				}
			}
			if d, ok := lookup(t, id, hs[j], (hs[j]+1)&mask); ok {
				found(base+j, d)
			}
		}
	}
}

// name returns the user id of dense id d (the string is its one allocation).
func (t *dict) name(d uint32) (string, bool) {
	if int64(d) >= int64(len(t.offs)) || t.offs[d] == 0 {
		return "", false
	}
	return string(t.idAt(t.offs[d])), true
}

// set makes id ↔ d a pair, dropping whatever id d had and whatever dense id
// id had, so the two directions always agree.
func (t *dict) set(id string, d uint32) error {
	if int64(d) < int64(len(t.offs)) && t.offs[d] != 0 {
		if string(t.idAt(t.offs[d])) == id {
			return nil
		}
		t.remove(d)
	}
	if old, ok := t.dense(id); ok {
		t.remove(old)
	}
	need := 4 + binary.MaxVarintLen64 + len(id)
	if len(t.arena)+need > maxArena && t.dead > 0 {
		t.compact()
	}
	if len(t.arena)+need > maxArena {
		return fmt.Errorf("user dictionary is full (%d bytes of user ids)", len(t.arena))
	}
	o := uint32(len(t.arena))
	t.arena = appendRecord(t.arena, d, id)
	if n := int64(d) + 1; n > int64(len(t.offs)) {
		t.offs = append(t.offs, make([]uint32, n-int64(len(t.offs)))...)
	}
	// Rehash before d is in offs: rehash inserts every record there.
	if (t.used+1)*4 > len(t.table)*3 {
		t.rehash()
	}
	t.offs[d] = o
	t.insert(maphash.String(t.seed, id), o)
	t.live++
	return nil
}

// appendRecord appends d's record: the dense id, the id's length, the id.
func appendRecord[S string | []byte](arena []byte, d uint32, id S) []byte {
	arena = binary.LittleEndian.AppendUint32(arena, d)
	arena = binary.AppendUvarint(arena, uint64(len(id)))
	return append(arena, id...)
}

// insert puts record offset o in the first free slot of h's probe sequence;
// the caller made sure the id is not in the table.
func (t *dict) insert(h uint64, o uint32) {
	mask := uint64(len(t.table) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		switch t.table[i] {
		case 0:
			t.used++
			t.table[i] = o
			return
		case tomb:
			t.table[i] = o
			return
		}
	}
}

// rehash rebuilds the table from offs without tombstones, at most half full.
func (t *dict) rehash() {
	n := 8
	for n < 2*(t.live+1) {
		n *= 2
	}
	t.table = make([]uint32, n)
	t.used = 0
	for _, o := range t.offs {
		if o != 0 {
			t.insert(maphash.Bytes(t.seed, t.idAt(o)), o)
		}
	}
}

// remove drops dense id d and its user id, if any.
func (t *dict) remove(d uint32) {
	if int64(d) >= int64(len(t.offs)) || t.offs[d] == 0 {
		return
	}
	o := t.offs[d]
	id := t.idAt(o)
	mask := uint64(len(t.table) - 1)
	for i := maphash.Bytes(t.seed, id) & mask; ; i = (i + 1) & mask {
		if t.table[i] == o {
			t.table[i] = tomb
			break
		}
	}
	t.dead += 4 + varintLen(len(id)) + len(id)
	t.offs[d] = 0
	t.live--
	if t.dead*2 > len(t.arena) {
		t.compact()
	}
}

func varintLen(n int) int {
	k := 1
	for ; n >= 0x80; n >>= 7 {
		k++
	}
	return k
}

// compact copies the live records to a fresh arena, which moves them, so the
// table of offsets is rebuilt too.
func (t *dict) compact() {
	arena := make([]byte, 1, len(t.arena)-t.dead)
	for d, o := range t.offs {
		if o != 0 {
			t.offs[d] = uint32(len(arena))
			arena = appendRecord(arena, uint32(d), t.idAt(o))
		}
	}
	t.arena = arena
	t.dead = 0
	t.rehash()
}
