CREATE TABLE se_syncs (
	sync_id           TEXT PRIMARY KEY,
	environment_id    TEXT NOT NULL,
	segment_id        TEXT NOT NULL,
	connection_id     TEXT NOT NULL,
	destination_type  TEXT NOT NULL,
	identity_property TEXT NOT NULL,
	schedule          TEXT NOT NULL,
	interval_us       BIGINT NOT NULL,
	mode              TEXT NOT NULL,
	enabled           BOOLEAN NOT NULL,
	frozen_name       TEXT NOT NULL,
	last_synced_at    BIGINT NOT NULL,
	last_status       TEXT NOT NULL,
	last_error        TEXT NOT NULL,
	next_run_at       BIGINT NOT NULL,
	data_expires_at   BIGINT NOT NULL,
	created_at        BIGINT NOT NULL,
	updated_at        BIGINT NOT NULL
);

CREATE INDEX se_syncs_due ON se_syncs (enabled, schedule, next_run_at);
CREATE INDEX se_syncs_env ON se_syncs (environment_id, segment_id);

-- What the destination acknowledged, per user: the checkpoint of every run.
CREATE TABLE se_delivered (
	sync_id  TEXT NOT NULL,
	dense_id BIGINT NOT NULL,
	identity TEXT NOT NULL,
	PRIMARY KEY (sync_id, dense_id)
);

-- Identities whose last delivery failed permanently; the next run retries.
CREATE TABLE se_failed (
	sync_id  TEXT NOT NULL,
	dense_id BIGINT NOT NULL,
	identity TEXT NOT NULL,
	removal  BOOLEAN NOT NULL,
	reason   TEXT NOT NULL,
	PRIMARY KEY (sync_id, dense_id)
);

CREATE TABLE se_runs (
	run_id          TEXT PRIMARY KEY,
	sync_id         TEXT NOT NULL,
	environment_id  TEXT NOT NULL,
	trigger_kind    TEXT NOT NULL,
	status          TEXT NOT NULL,
	created_at      BIGINT NOT NULL,
	started_at      BIGINT NOT NULL,
	finished_at     BIGINT NOT NULL,
	added           BIGINT NOT NULL,
	removed         BIGINT NOT NULL,
	unmatched       BIGINT NOT NULL,
	failed          BIGINT NOT NULL,
	retried         BIGINT NOT NULL,
	error           TEXT NOT NULL,
	failed_sample   TEXT NOT NULL,
	data_expires_at BIGINT NOT NULL,
	trace_id        TEXT NOT NULL
);

CREATE INDEX se_runs_sync ON se_runs (sync_id, created_at);
