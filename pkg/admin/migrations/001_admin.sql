CREATE TABLE environments (
	id         TEXT PRIMARY KEY,
	name       TEXT NOT NULL UNIQUE,
	parent_id  TEXT REFERENCES environments (id),
	created_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
	id             TEXT PRIMARY KEY,
	environment_id TEXT NOT NULL REFERENCES environments (id),
	name           TEXT NOT NULL,
	role           TEXT NOT NULL,
	prefix         TEXT NOT NULL,
	hash           TEXT NOT NULL UNIQUE,
	created_at     BIGINT NOT NULL,
	revoked_at     BIGINT
);

CREATE INDEX api_keys_environment ON api_keys (environment_id);
