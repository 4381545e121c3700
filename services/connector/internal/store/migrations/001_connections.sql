CREATE TABLE cn_connections (
	connection_id     TEXT PRIMARY KEY,
	environment_id    TEXT NOT NULL,
	type              TEXT NOT NULL,
	name              TEXT NOT NULL,
	account           TEXT NOT NULL,
	status            TEXT NOT NULL,
	last_error        TEXT NOT NULL,
	last_error_at     BIGINT NOT NULL,
	send_events       BOOLEAN NOT NULL,
	identity_property TEXT NOT NULL,
	credentials       {{BLOB}} NOT NULL,
	signing_secret    {{BLOB}},
	created_at        BIGINT NOT NULL,
	updated_at        BIGINT NOT NULL,
	UNIQUE (environment_id, name)
);

-- OAuth authorisations in flight: the state is stored as a hash, the PKCE
-- verifier sealed; a state is used once and expires.
CREATE TABLE cn_oauth_states (
	state_hash     TEXT PRIMARY KEY,
	environment_id TEXT NOT NULL,
	type           TEXT NOT NULL,
	name           TEXT NOT NULL,
	account        TEXT NOT NULL,
	send_events    BOOLEAN NOT NULL,
	identity_property TEXT NOT NULL,
	verifier       {{BLOB}} NOT NULL,
	expires_at     BIGINT NOT NULL,
	used_at        BIGINT
);
