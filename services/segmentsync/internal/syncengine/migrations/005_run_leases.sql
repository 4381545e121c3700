-- A run being worked holds a lease that its worker renews; a run whose lease
-- lapsed (its process died) is taken over by another worker within seconds
-- instead of waiting for River's rescue of the stuck job.
ALTER TABLE se_runs ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '';
ALTER TABLE se_runs ADD COLUMN lease_expires_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE se_runs ADD COLUMN takeovers BIGINT NOT NULL DEFAULT 0;
CREATE INDEX se_runs_lease ON se_runs (status, lease_expires_at);
