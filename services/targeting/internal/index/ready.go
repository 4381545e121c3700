package index

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// feedState is whether the membership feed is open, and why not.
type feedState struct {
	mu      sync.Mutex
	open    bool
	lastErr string
}

func (f *feedState) set(open bool, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.open = open
	if err != nil {
		f.lastErr = err.Error()
	}
}

// Ready reports why the replica is not ready to answer (nil when it is):
// its membership feed is not open, or an environment it holds has not
// caught up with the feed's backlog (answers would be stale).
func (ix *Index) Ready() error {
	ix.feed.mu.Lock()
	open, lastErr := ix.feed.open, ix.feed.lastErr
	ix.feed.mu.Unlock()
	if !open {
		if lastErr == "" {
			return errors.New("membership feed not opened yet")
		}
		return fmt.Errorf("membership feed not open: %s", lastErr)
	}
	var behind []string
	for env, v := range ix.Versions() {
		if !v.CaughtUp {
			behind = append(behind, fmt.Sprintf("%s (at sequence %d)", env, v.Sequence))
		}
	}
	if len(behind) > 0 {
		slices.Sort(behind)
		return fmt.Errorf("index not caught up with the membership feed for %s", strings.Join(behind, ", "))
	}
	return nil
}
