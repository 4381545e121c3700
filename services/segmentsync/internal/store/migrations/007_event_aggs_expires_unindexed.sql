-- The window pass finds the rows due (expires <= today) once a day per
-- environment by its condition's primary-key range instead of an index on
-- (cond_id, expires): the index cost every aggregate write (each event, each
-- backfill) about 40 % of its time, and a day's pass over 1 M users no time
-- it saved (it rewrites the due rows, whose index entries moved as well).
DROP INDEX ss_event_aggs_expires;
