-- Where a sync's delivered identities were last compared with every member's
-- current value (by a run that finished): the segmentsync change-log sequence
-- read before that comparison, and the held users it did not confirm (members
-- without a value, and users held but no longer members, which upsert mode
-- keeps). A dry run re-reads only the users changed since, the diff and those.
CREATE TABLE se_identity_checks (
	sync_id           TEXT PRIMARY KEY,
	identity_property TEXT NOT NULL,
	seq               BIGINT NOT NULL,
	unverified        {{BLOB}} NOT NULL
);
