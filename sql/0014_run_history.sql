-- Run records keep every attempt of every stage, and know when the job behind one died.
--
-- Before, a stage had one row: a rerun that found the work done rewrote a succeeded stage as
-- 'skipped', losing the timings and attempt that did the work; and a killed job left its run
-- and stage 'running' for ever. Now each attempt is a row of its own, and a running attempt
-- holds a lease its job renews (heartbeat): past it, the attempt is abandoned and the next one
-- takes over.

ALTER TABLE precompute.run_stages DROP CONSTRAINT run_stages_pkey;
ALTER TABLE precompute.run_stages ADD PRIMARY KEY (run_id, stage, attempt);
ALTER TABLE precompute.run_stages DROP CONSTRAINT run_stages_state_check;
ALTER TABLE precompute.run_stages ADD CONSTRAINT run_stages_state_check
    CHECK (state IN ('running', 'succeeded', 'failed', 'skipped', 'abandoned'));
ALTER TABLE precompute.run_stages ADD COLUMN lease_until timestamptz;
ALTER TABLE precompute.run_stages ADD COLUMN holder text;
COMMENT ON COLUMN precompute.run_stages.state IS
    'running, succeeded, failed, skipped (a rerun with nothing left to do) or abandoned (its '
    'job stopped renewing its lease: killed or lost).';
COMMENT ON COLUMN precompute.run_stages.attempt IS
    'Attempt number; every attempt is kept, the highest is the latest.';
COMMENT ON COLUMN precompute.run_stages.started_at IS 'When the attempt started.';
COMMENT ON COLUMN precompute.run_stages.finished_at IS 'When the attempt ended.';
COMMENT ON COLUMN precompute.run_stages.lease_until IS
    'While running: the job renews this; an attempt still running past it is abandoned.';
COMMENT ON COLUMN precompute.run_stages.holder IS
    'The process running the attempt (host:pid:start time): on the same host, a next attempt '
    'sees at once that it died.';

ALTER TABLE precompute.runs ADD COLUMN lease_until timestamptz;
COMMENT ON COLUMN precompute.runs.lease_until IS
    'While running: renewed by the running stage; a run still running past it is abandoned.';

-- Rows a publish could not make visible (an entity id PostgreSQL or lookups cannot take) are
-- counted instead of blocking the batch: published + unpublished = scored.
ALTER TABLE precompute.runs ADD COLUMN rows_unpublished bigint NOT NULL DEFAULT 0
    CHECK (rows_unpublished >= 0);
COMMENT ON COLUMN precompute.runs.rows_unpublished IS
    'Scored rows publish left out because their entity id cannot be served (control '
    'characters, too long); listed in the publish stage''s error.';
ALTER TABLE precompute.runs DROP CONSTRAINT runs_published_equals_scored;
ALTER TABLE precompute.runs ADD CONSTRAINT runs_published_adds_up
    CHECK (rows_scored IS NULL OR rows_published IS NULL
           OR rows_published + rows_unpublished = rows_scored);

-- The stage analysts and the API read: each stage's latest attempt that did something (a
-- skipped rerun does not hide the attempt that did the work), with abandoned attempts shown as
-- such, and how many attempts there were.
CREATE VIEW analytics.run_stages AS
SELECT s.run_id,
       s.stage,
       CASE WHEN s.state = 'running' AND s.lease_until < now() THEN 'abandoned'
            ELSE s.state END AS state,
       s.attempt,
       (SELECT count(*) FROM precompute.run_stages a
         WHERE a.run_id = s.run_id AND a.stage = s.stage) AS attempts,
       s.rows_in,
       s.rows_out,
       s.rows_rejected,
       s.error,
       s.started_at,
       s.finished_at,
       s.finished_at - s.started_at AS duration
FROM (SELECT DISTINCT ON (run_id, stage) *
        FROM precompute.run_stages
       ORDER BY run_id, stage, (state = 'skipped'), attempt DESC) s;
COMMENT ON VIEW analytics.run_stages IS
    'Each stage of each run as its latest real attempt (skipped reruns do not hide it).';
COMMENT ON COLUMN analytics.run_stages.run_id IS 'The run.';
COMMENT ON COLUMN analytics.run_stages.stage IS 'ingest, score, publish or check.';
COMMENT ON COLUMN analytics.run_stages.state IS
    'running, succeeded, failed, abandoned (its job died), or skipped (only skipped reruns).';
COMMENT ON COLUMN analytics.run_stages.attempt IS 'The attempt shown.';
COMMENT ON COLUMN analytics.run_stages.attempts IS 'Attempts made, skipped reruns included.';
COMMENT ON COLUMN analytics.run_stages.rows_in IS 'Rows the stage read.';
COMMENT ON COLUMN analytics.run_stages.rows_out IS 'Rows the stage wrote.';
COMMENT ON COLUMN analytics.run_stages.rows_rejected IS 'Rows the stage rejected.';
COMMENT ON COLUMN analytics.run_stages.error IS 'Why the attempt failed.';
COMMENT ON COLUMN analytics.run_stages.started_at IS 'When the attempt started.';
COMMENT ON COLUMN analytics.run_stages.finished_at IS 'When the attempt ended.';
COMMENT ON COLUMN analytics.run_stages.duration IS 'How long the attempt took.';

-- Runs as analysts see them: a run whose job died is abandoned, not running for ever.
CREATE OR REPLACE VIEW analytics.runs AS
SELECT r.run_id,
       r.mode,
       r.batch_id,
       m.name AS model,
       v.version,
       CASE WHEN r.state = 'running' AND r.lease_until < now() THEN 'abandoned'
            ELSE r.state END AS state,
       r.rows_read,
       r.rows_accepted,
       r.rows_quarantined,
       r.rows_scored,
       r.rows_published,
       CASE WHEN r.rows_read > 0
            THEN r.rows_quarantined::double precision / r.rows_read END AS rejected_share,
       (SELECT rm.value FROM precompute.run_metrics rm
        WHERE rm.run_id = r.run_id AND rm.name = 'psi') AS psi,
       r.error,
       r.started_at,
       r.finished_at,
       r.finished_at - r.started_at AS duration,
       r.rows_unpublished
FROM precompute.runs r
LEFT JOIN precompute.model_versions v ON v.version_id = r.model_version_id
LEFT JOIN precompute.models m ON m.model_id = v.model_id;
COMMENT ON COLUMN analytics.runs.state IS
    'queued, running, succeeded, failed, or abandoned (its job died while running).';
COMMENT ON COLUMN analytics.runs.rows_unpublished IS
    'Scored rows publish left out: entity ids that cannot be served.';

GRANT SELECT ON analytics.run_stages TO precompute_reader, precompute_writer;
