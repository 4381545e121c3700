-- The trace a dead letter's event was in (its W3C traceparent), so that a
-- replay continues that trace.
ALTER TABLE er_dead_letters ADD COLUMN trace_parent TEXT NOT NULL DEFAULT '';
