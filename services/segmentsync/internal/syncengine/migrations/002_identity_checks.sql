-- Where a sync's delivered identities were last compared with every member's
-- current value (by a run that finished): the segmentsync change-log sequence
-- read before that comparison, and the members still held then without a
-- value (upsert mode keeps them). A dry run re-reads only the members changed
-- since, the diff and those.
CREATE TABLE se_identity_checks (
	sync_id           TEXT PRIMARY KEY,
	identity_property TEXT NOT NULL,
	seq               BIGINT NOT NULL,
	unmatched_held    {{BLOB}} NOT NULL
);
