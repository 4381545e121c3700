-- One aggregate row per (condition, user) instead of a row per day: the day
-- buckets packed in days (rules.EncodeDays). Conditions get a dense integer
-- id from a counter row (shared by every environment, so ids stay unique
-- when environments add conditions concurrently). expires is the first day
-- on which one of the row's buckets leaves one of its condition's sliding
-- windows (the window pass reads the rows due by it); 2147483647 for never.
-- progress is how far a backfill read not yet applied has got (percentage).
-- Rows of ss_event_counts/ss_event_seen are converted when the store opens
-- (convertEventCounts), which then drops those tables.
ALTER TABLE ss_event_conditions ADD COLUMN cond_id BIGINT NOT NULL DEFAULT 0;
ALTER TABLE ss_event_conditions ADD COLUMN progress BIGINT NOT NULL DEFAULT 0;
UPDATE ss_event_conditions SET cond_id = (SELECT COUNT(*) FROM ss_event_conditions c2
	WHERE c2.environment_id < ss_event_conditions.environment_id
	OR (c2.environment_id = ss_event_conditions.environment_id AND c2.cond_key <= ss_event_conditions.cond_key));
CREATE UNIQUE INDEX ss_event_conditions_id ON ss_event_conditions (cond_id);

CREATE TABLE ss_event_cond_counter (
	one  INTEGER PRIMARY KEY,
	next BIGINT NOT NULL
);
INSERT INTO ss_event_cond_counter (one, next) SELECT 1, COUNT(*) FROM ss_event_conditions;

CREATE TABLE ss_event_aggs (
	cond_id  BIGINT NOT NULL,
	dense_id BIGINT NOT NULL,
	first_at BIGINT NOT NULL,
	last_at  BIGINT NOT NULL,
	expires  INTEGER NOT NULL,
	days     {{BLOB}} NOT NULL,
	PRIMARY KEY (cond_id, dense_id)
) {{WITHOUT_ROWID}};
CREATE INDEX ss_event_aggs_expires ON ss_event_aggs (cond_id, expires);
