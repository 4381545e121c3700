-- One replica at a time delivers to sinks (per-user order needs a single
-- consumer of each sink's stream); the holder renews its lease, another
-- replica takes over once it expires.
CREATE TABLE er_leases (
	name       TEXT PRIMARY KEY,
	holder     TEXT NOT NULL,
	expires_at BIGINT NOT NULL
);
