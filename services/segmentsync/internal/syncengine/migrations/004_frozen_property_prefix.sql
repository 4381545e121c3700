-- A sync freezes its connection's property prefix with its name at the
-- first run; syncs frozen before the setting existed delivered under the
-- only prefix there was.
ALTER TABLE se_syncs ADD COLUMN frozen_prefix TEXT NOT NULL DEFAULT '';
UPDATE se_syncs SET frozen_prefix = '[seghub]' WHERE frozen_name <> '' AND destination_type = 'appcues';
