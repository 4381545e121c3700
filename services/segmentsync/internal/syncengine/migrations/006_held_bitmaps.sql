-- What a sync's destination holds, kept per sync rather than per user: a
-- compacted bitmap of dense ids, the batches acknowledged since (one delta
-- each, applied in seq order, folded into the bitmap at run end and every
-- few hundred batches), and only the identities a user's own id does not
-- give: another property's value, one that differed once, or a deleted
-- user's id (deleted_user, so the next run can still remove it). Existing
-- se_delivered rows are converted when the store opens (convertDelivered).
CREATE TABLE se_held (
	sync_id TEXT PRIMARY KEY,
	members {{BLOB}} NOT NULL
);

CREATE TABLE se_held_log (
	sync_id TEXT NOT NULL,
	seq     BIGINT NOT NULL,
	added   {{BLOB}} NOT NULL,
	removed {{BLOB}} NOT NULL,
	PRIMARY KEY (sync_id, seq)
);

CREATE TABLE se_held_identities (
	sync_id      TEXT NOT NULL,
	dense_id     BIGINT NOT NULL,
	identity     TEXT NOT NULL,
	deleted_user BOOLEAN NOT NULL,
	PRIMARY KEY (sync_id, dense_id)
);
