-- Per environment: the change-log head (gapless sequence, commit-ordered
-- because writers serialise on this row) and the next dense user id.
CREATE TABLE ss_env_heads (
	environment_id TEXT PRIMARY KEY,
	seq            BIGINT NOT NULL,
	next_dense     BIGINT NOT NULL
);

CREATE TABLE ss_users (
	environment_id TEXT NOT NULL,
	dense_id       BIGINT NOT NULL,
	user_id        TEXT NOT NULL,
	properties     TEXT NOT NULL,
	created_at     BIGINT NOT NULL,
	updated_at     BIGINT NOT NULL,
	PRIMARY KEY (environment_id, dense_id),
	UNIQUE (environment_id, user_id)
);

CREATE TABLE ss_segments (
	segment_id     TEXT PRIMARY KEY,
	environment_id TEXT NOT NULL,
	name           TEXT NOT NULL,
	description    TEXT NOT NULL,
	visibility     TEXT NOT NULL,
	external_id    TEXT NOT NULL,
	members        {{BLOB}} NOT NULL,
	member_count   BIGINT NOT NULL,
	version        BIGINT NOT NULL,
	created_at     BIGINT NOT NULL,
	updated_at     BIGINT NOT NULL,
	UNIQUE (environment_id, name)
);

CREATE INDEX ss_segments_external ON ss_segments (environment_id, external_id);

-- The change log WatchMembership replays. kind: users, users_deleted,
-- segment, membership, segment_deleted.
CREATE TABLE ss_changes (
	environment_id TEXT NOT NULL,
	seq            BIGINT NOT NULL,
	kind           TEXT NOT NULL,
	segment_id     TEXT NOT NULL,
	version        BIGINT NOT NULL,
	added          {{BLOB}},
	removed        {{BLOB}},
	detail         TEXT NOT NULL,
	created_at     BIGINT NOT NULL,
	PRIMARY KEY (environment_id, seq)
);
