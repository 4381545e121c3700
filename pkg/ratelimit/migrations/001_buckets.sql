CREATE TABLE rl_buckets (
	bucket_key   TEXT PRIMARY KEY,
	tokens       DOUBLE PRECISION NOT NULL,
	updated_at   BIGINT NOT NULL,
	paused_until BIGINT NOT NULL
);
