-- Runs that score only pending asynchronous score requests: a scheduled scoring run that finds
-- no new batch still answers the requests waiting for the champion. Such a run has no batch and
-- publishes like an incremental one (its rows are upserted into the champion's partition).
ALTER TABLE precompute.runs DROP CONSTRAINT runs_mode_check;
ALTER TABLE precompute.runs
    ADD CONSTRAINT runs_mode_check CHECK (mode IN ('incremental', 'full', 'requests'));
ALTER TABLE precompute.runs DROP CONSTRAINT runs_check;
ALTER TABLE precompute.runs
    ADD CONSTRAINT runs_batch_check CHECK (mode <> 'incremental' OR batch_id IS NOT NULL);
COMMENT ON COLUMN precompute.runs.mode IS
    'incremental (one ingested batch), full (every current entity) or requests (only pending '
    'score requests).';

ALTER TABLE precompute.published_runs DROP CONSTRAINT published_runs_mode_check;
ALTER TABLE precompute.published_runs
    ADD CONSTRAINT published_runs_mode_check CHECK (mode IN ('incremental', 'full', 'requests'));
COMMENT ON COLUMN precompute.published_runs.mode IS
    'incremental or requests (upsert or merge into the partition) or full (swap).';
COMMENT ON COLUMN analytics.runs.mode IS 'incremental, full or requests.';
