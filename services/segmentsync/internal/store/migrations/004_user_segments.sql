-- The segments each user is in: the reverse of the segments' bitmaps, so
-- reading or deleting one user touches that user's memberships only instead
-- of decoding every segment of the environment. Every membership change
-- updates it in the same transaction.
CREATE TABLE ss_user_segments (
	environment_id TEXT NOT NULL,
	dense_id       BIGINT NOT NULL,
	segment_id     TEXT NOT NULL,
	PRIMARY KEY (environment_id, dense_id, segment_id)
) {{WITHOUT_ROWID}};

-- Segments whose members are not in ss_user_segments yet: those that existed
-- before it. SQL cannot read a roaring bitmap, so Open fills them in.
CREATE TABLE ss_user_segments_backfill (
	segment_id     TEXT PRIMARY KEY,
	environment_id TEXT NOT NULL
);
INSERT INTO ss_user_segments_backfill (segment_id, environment_id) SELECT segment_id, environment_id FROM ss_segments;
