CREATE TABLE tg_experiences (
	experience_id  TEXT PRIMARY KEY,
	environment_id TEXT NOT NULL,
	name           TEXT NOT NULL,
	type           TEXT NOT NULL,
	audience       TEXT NOT NULL,
	enabled        BOOLEAN NOT NULL,
	created_at     BIGINT NOT NULL,
	updated_at     BIGINT NOT NULL
);

CREATE INDEX tg_experiences_env ON tg_experiences (environment_id, type);
