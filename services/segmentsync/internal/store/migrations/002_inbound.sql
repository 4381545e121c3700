-- Segments pushed by analytics tools' partner webhooks: pages are kept until
-- a sync task's last page arrives, then applied in one transaction.
CREATE TABLE ss_inbound_tasks (
	connection_id       TEXT NOT NULL,
	sync_task_id        TEXT NOT NULL,
	environment_id      TEXT NOT NULL,
	external_segment_id TEXT NOT NULL,
	segment_name        TEXT NOT NULL,
	segment_id          TEXT NOT NULL,
	total_pages         INTEGER NOT NULL,
	pages_received      INTEGER NOT NULL,
	adds                BIGINT NOT NULL,
	removes             BIGINT NOT NULL,
	applied             BOOLEAN NOT NULL,
	first_page_at       BIGINT NOT NULL,
	applied_at          BIGINT NOT NULL,
	PRIMARY KEY (connection_id, sync_task_id)
);

CREATE TABLE ss_inbound_pages (
	connection_id TEXT NOT NULL,
	sync_task_id  TEXT NOT NULL,
	page_number   INTEGER NOT NULL,
	adds          TEXT NOT NULL,
	removes       TEXT NOT NULL,
	PRIMARY KEY (connection_id, sync_task_id, page_number)
);

CREATE TABLE ss_inbound_sources (
	connection_id     TEXT PRIMARY KEY,
	rejected_requests BIGINT NOT NULL
);
