-- A source's rejected-request count belongs to the connection's environment
-- and is read only within it. Counts recorded before this column existed take
-- the environment of the connection's tasks; those of connections without
-- tasks keep '' and are no longer shown.
ALTER TABLE ss_inbound_sources ADD COLUMN environment_id TEXT NOT NULL DEFAULT '';
UPDATE ss_inbound_sources SET environment_id = COALESCE((SELECT MIN(t.environment_id) FROM ss_inbound_tasks t WHERE t.connection_id = ss_inbound_sources.connection_id), '');
