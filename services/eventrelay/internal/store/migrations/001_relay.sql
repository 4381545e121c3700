-- Routes send events to a sink connection (an analytics track API or a
-- destination's track API). Filters are JSON lists; empty means all.
CREATE TABLE er_routes (
	route_id       TEXT PRIMARY KEY,
	environment_id TEXT NOT NULL,
	connection_id  TEXT NOT NULL,
	sources        TEXT NOT NULL,
	event_names    TEXT NOT NULL,
	created_at     BIGINT NOT NULL
);
CREATE INDEX er_routes_env ON er_routes (environment_id);

-- Events a sink gave up on after its attempts and its time window, with the
-- reason; replaying one republishes it to that sink alone.
CREATE TABLE er_dead_letters (
	dead_letter_id   TEXT PRIMARY KEY,
	environment_id   TEXT NOT NULL,
	connection_id    TEXT NOT NULL,
	event_id         TEXT NOT NULL,
	envelope         {{BLOB}} NOT NULL,
	reason           TEXT NOT NULL,
	attempts         INTEGER NOT NULL,
	first_attempt_at BIGINT NOT NULL,
	dead_at          BIGINT NOT NULL,
	replayed_at      BIGINT
);
CREATE INDEX er_dead_letters_env ON er_dead_letters (environment_id, dead_at);
