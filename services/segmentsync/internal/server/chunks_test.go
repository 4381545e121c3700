package server

import (
	"fmt"
	"strings"
	"testing"

	"github.com/seghub/seghub/services/segmentsync/internal/store"
)

// Users of a live users change are split into UserChunks of at most
// userChunkSize users, and earlier when their properties pass
// chunkPropBytes; every user is sent once, in order, with its properties.
func TestLeanChunksSplit(t *testing.T) {
	t.Parallel()
	bare := func(n int) []*store.User {
		out := make([]*store.User, n)
		for i := range out {
			out[i] = &store.User{ID: fmt.Sprintf("u%d", i), Dense: uint32(i + 1)}
		}
		return out
	}
	big := store.Prop{Kind: store.PropString, S: strings.Repeat("x", 4000)}
	heavy := bare(600)
	for _, u := range heavy {
		u.Props = map[string]store.Prop{"blob": big}
	}
	for name, tc := range map[string]struct {
		users []*store.User
		sizes []int
	}{
		"none":                   {nil, nil},
		"one chunk":              {bare(10), []int{10}},
		"exactly a chunk":        {bare(userChunkSize), []int{userChunkSize}},
		"by count":               {bare(2*userChunkSize + 7), []int{userChunkSize, userChunkSize, 7}},
		"by bytes of properties": {heavy, []int{261, 261, 78}}, // ~4 020 bytes a user: 1 MiB reached by the 261st
	} {
		var sizes []int
		var next uint32 = 1
		err := leanChunks(tc.users, func(chunk []store.LeanUser) error {
			sizes = append(sizes, len(chunk))
			m := userChunk(chunk).GetUserChunk()
			for i, d := range m.GetDenseIds() {
				if d != next || m.GetUserIds()[i] != fmt.Sprintf("u%d", d-1) {
					return fmt.Errorf("user %d of a chunk is %d %q, want dense %d", i, d, m.GetUserIds()[i], next)
				}
				next++
			}
			for _, p := range m.GetProperties() {
				if p.GetProperties()["blob"].GetStringValue() != big.S {
					return fmt.Errorf("user %d lost its properties", p.GetDenseId())
				}
			}
			if tc.users != nil && len(tc.users[0].Props) > 0 && len(m.GetProperties()) != len(chunk) {
				return fmt.Errorf("%d properties for %d users", len(m.GetProperties()), len(chunk))
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if fmt.Sprint(sizes) != fmt.Sprint(tc.sizes) {
			t.Errorf("%s: chunks of %v, want %v", name, sizes, tc.sizes)
		}
	}
}
