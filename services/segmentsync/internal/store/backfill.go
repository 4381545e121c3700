package store

import (
	"context"
	"errors"

	"github.com/seghub/seghub/services/segmentsync/internal/rules"
)

// KeyedAgg is one condition's aggregate of one user.
type KeyedAgg struct {
	Key string
	Agg rules.Agg
}

// UserAggs is what a backfill read found for one user.
type UserAggs struct {
	User string
	Aggs []KeyedAgg
}

// BackfillRead is what one read of an environment's events stream produced for its computing conditions.
type BackfillRead struct {
	Env string
	// Since is, per computing condition key, the scanned mark the read started after: the read counted
	// only events with a sequence above it for that key.
	Since   map[string]uint64
	Through uint64 // every message of the stream up to Through was read
	// Target and First are the live position aimed at and the stream's first sequence (for the percentage).
	Target, First uint64
	Users         []UserAggs // any order; a user appears once
}

// ApplyBackfill merges a read into the stored aggregates in one transaction: for each key still computing
// whose scanned mark equals Since[key], the users' aggregates are added (sum of day counts, min first,
// max last; users created when missing) and scanned becomes Through (target, first recorded); other keys
// are left alone (a concurrent change: the reader reads again). It is idempotent per (key, Since).
func (s *Store) ApplyBackfill(ctx context.Context, b *BackfillRead) error {
	return errors.New("segmentsync: ApplyBackfill: not yet")
}

// BackfillProgress records how far a read not yet applied has got, for compute_percent only.
func (s *Store) BackfillProgress(ctx context.Context, env string, keys []string, read, target, first uint64) error {
	return errors.New("segmentsync: BackfillProgress: not yet")
}
