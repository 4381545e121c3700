-- A segment has one sync per connection: re-enabling resumes it. Where
-- earlier versions created several, the one kept is the enabled one (the
-- live property at the destination), else the newest; the others go with
-- their checkpoints and runs.
CREATE TABLE se_syncs_superseded AS
SELECT s.sync_id FROM se_syncs s WHERE EXISTS (
	SELECT 1 FROM se_syncs k
	WHERE k.environment_id = s.environment_id AND k.segment_id = s.segment_id AND k.connection_id = s.connection_id
	  AND (k.enabled > s.enabled OR (k.enabled = s.enabled AND (k.created_at > s.created_at
	       OR (k.created_at = s.created_at AND k.sync_id > s.sync_id)))));

DELETE FROM se_failed WHERE sync_id IN (SELECT sync_id FROM se_syncs_superseded);
DELETE FROM se_delivered WHERE sync_id IN (SELECT sync_id FROM se_syncs_superseded);
DELETE FROM se_identity_checks WHERE sync_id IN (SELECT sync_id FROM se_syncs_superseded);
DELETE FROM se_runs WHERE sync_id IN (SELECT sync_id FROM se_syncs_superseded);
DELETE FROM se_syncs WHERE sync_id IN (SELECT sync_id FROM se_syncs_superseded);
DROP TABLE se_syncs_superseded;

CREATE UNIQUE INDEX se_syncs_segment_connection ON se_syncs (environment_id, segment_id, connection_id);
