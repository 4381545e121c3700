-- Environments whose source connections (Appcues, CommandBar) forward
-- events: their analytics connections take those events with no route.
CREATE TABLE er_source_envs (
	environment_id TEXT PRIMARY KEY,
	since          BIGINT NOT NULL
);
