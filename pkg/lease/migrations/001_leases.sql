-- A role one process of a deployment holds at a time (e.g. the computed-
-- segment consumer): the holder renews its row, another process takes the
-- role over once expires_at (unix microseconds) has passed.
CREATE TABLE leases (
	name       TEXT PRIMARY KEY,
	holder     TEXT NOT NULL,
	expires_at BIGINT NOT NULL
);
