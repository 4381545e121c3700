-- A route may deliver its events under another name (Heap's Snapshot
-- workaround: Appcues.track("any name")); '' keeps the event's own.
ALTER TABLE er_routes ADD COLUMN deliver_as TEXT NOT NULL DEFAULT '';
