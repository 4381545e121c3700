-- Computed segments: a segment with a rule (protojson of SegmentRule) whose
-- membership the store computes. state: computing (its event conditions are
-- being backfilled, or its first full evaluation is due) or live.
CREATE TABLE ss_computed (
	segment_id     TEXT PRIMARY KEY,
	environment_id TEXT NOT NULL,
	rule           TEXT NOT NULL,
	rule_version   BIGINT NOT NULL,
	state          TEXT NOT NULL
);
CREATE INDEX ss_computed_env ON ss_computed (environment_id);

-- The event conditions (source, name, property filters) rules use, shared by
-- every rule naming the same ones. A computing condition is backfilled from
-- the events stream: scanned is the stream sequence read through, target the
-- sequence to reach (the live consumer's position), first the stream's first
-- sequence when the backfill began (for its percentage).
CREATE TABLE ss_event_conditions (
	environment_id TEXT NOT NULL,
	cond_key       TEXT NOT NULL,
	definition     TEXT NOT NULL,
	state          TEXT NOT NULL,
	scanned        BIGINT NOT NULL,
	target         BIGINT NOT NULL,
	first_seq      BIGINT NOT NULL,
	PRIMARY KEY (environment_id, cond_key)
);

-- Which conditions each computed segment uses.
CREATE TABLE ss_computed_conditions (
	segment_id     TEXT NOT NULL,
	environment_id TEXT NOT NULL,
	cond_key       TEXT NOT NULL,
	PRIMARY KEY (segment_id, cond_key)
) {{WITHOUT_ROWID}};
CREATE INDEX ss_computed_conditions_key ON ss_computed_conditions (environment_id, cond_key);

-- Per user and condition: events per UTC day (days since 1970-01-01).
CREATE TABLE ss_event_counts (
	environment_id TEXT NOT NULL,
	dense_id       BIGINT NOT NULL,
	cond_key       TEXT NOT NULL,
	day            INTEGER NOT NULL,
	n              BIGINT NOT NULL,
	PRIMARY KEY (environment_id, dense_id, cond_key, day)
) {{WITHOUT_ROWID}};
-- The window pass finds the users whose buckets leave a window by day.
CREATE INDEX ss_event_counts_day ON ss_event_counts (environment_id, cond_key, day);

-- Per user and condition: first and last event times (unix microseconds).
CREATE TABLE ss_event_seen (
	environment_id TEXT NOT NULL,
	dense_id       BIGINT NOT NULL,
	cond_key       TEXT NOT NULL,
	first_at       BIGINT NOT NULL,
	last_at        BIGINT NOT NULL,
	PRIMARY KEY (environment_id, dense_id, cond_key)
) {{WITHOUT_ROWID}};

-- The stream sequence the live consumer applied through, committed with the
-- aggregates it produced: a redelivered event at or below it is a no-op.
CREATE TABLE ss_event_position (
	consumer TEXT PRIMARY KEY,
	seq      BIGINT NOT NULL
);

-- Per environment, the UTC day the window pass last ran for.
CREATE TABLE ss_window_pass (
	environment_id TEXT PRIMARY KEY,
	day            INTEGER NOT NULL
);
