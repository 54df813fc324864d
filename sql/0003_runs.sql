-- Scoring runs: one row per pipeline run (ingest -> score -> publish), its stages and metrics.

CREATE TABLE precompute.runs (
    run_id           text PRIMARY KEY CHECK (length(run_id) BETWEEN 1 AND 250),
    mode             text NOT NULL CHECK (mode IN ('incremental', 'full')),
    batch_id         text,
    model_version_id bigint REFERENCES precompute.model_versions,
    state            text NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
    rows_read        bigint CHECK (rows_read >= 0),
    rows_accepted    bigint CHECK (rows_accepted >= 0),
    rows_quarantined bigint CHECK (rows_quarantined >= 0),
    rows_scored      bigint CHECK (rows_scored >= 0),
    rows_published   bigint CHECK (rows_published >= 0),
    error            text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    CHECK (mode = 'full' OR batch_id IS NOT NULL),
    -- Conservation of rows where both sides are known: every row read is accepted or
    -- quarantined.
    CHECK (rows_read IS NULL OR rows_accepted IS NULL OR rows_quarantined IS NULL
           OR rows_read = rows_accepted + rows_quarantined)
);
CREATE INDEX runs_by_batch ON precompute.runs (batch_id);
CREATE INDEX runs_by_created ON precompute.runs (created_at DESC);
COMMENT ON TABLE precompute.runs IS
    'Scoring runs: one per pipeline run, with its state and row counts per stage.';
COMMENT ON COLUMN precompute.runs.run_id IS 'Run id (the Airflow run id when started by Airflow).';
COMMENT ON COLUMN precompute.runs.mode IS
    'incremental (one ingested batch) or full (rescore of every current entity).';
COMMENT ON COLUMN precompute.runs.batch_id IS 'The ingested batch; null for a full rescore.';
COMMENT ON COLUMN precompute.runs.model_version_id IS 'The model version that scored the run.';
COMMENT ON COLUMN precompute.runs.state IS 'queued, running, succeeded or failed.';
COMMENT ON COLUMN precompute.runs.rows_read IS 'Rows read from the input files.';
COMMENT ON COLUMN precompute.runs.rows_accepted IS 'Rows that passed validation.';
COMMENT ON COLUMN precompute.runs.rows_quarantined IS 'Rows rejected into the quarantine table.';
COMMENT ON COLUMN precompute.runs.rows_scored IS 'Rows scored by the model.';
COMMENT ON COLUMN precompute.runs.rows_published IS 'Predictions made visible in serving.';
COMMENT ON COLUMN precompute.runs.error IS 'Why the run failed, for a failed run.';
COMMENT ON COLUMN precompute.runs.created_at IS 'When the run was recorded.';
COMMENT ON COLUMN precompute.runs.started_at IS 'When its first stage started.';
COMMENT ON COLUMN precompute.runs.finished_at IS 'When it succeeded or failed.';

CREATE TABLE precompute.run_stages (
    run_id        text NOT NULL REFERENCES precompute.runs ON DELETE CASCADE,
    stage         text NOT NULL CHECK (stage IN ('ingest', 'score', 'publish', 'check')),
    state         text NOT NULL CHECK (state IN ('running', 'succeeded', 'failed', 'skipped')),
    attempt       integer NOT NULL DEFAULT 1 CHECK (attempt > 0),
    rows_in       bigint CHECK (rows_in >= 0),
    rows_out      bigint CHECK (rows_out >= 0),
    rows_rejected bigint CHECK (rows_rejected >= 0),
    error         text,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    PRIMARY KEY (run_id, stage)
);
COMMENT ON TABLE precompute.run_stages IS 'Each stage of a run: state, timing, rows in and out.';
COMMENT ON COLUMN precompute.run_stages.run_id IS 'The run.';
COMMENT ON COLUMN precompute.run_stages.stage IS 'ingest, score, publish or check.';
COMMENT ON COLUMN precompute.run_stages.state IS 'running, succeeded, failed or skipped.';
COMMENT ON COLUMN precompute.run_stages.attempt IS 'Attempt number; a retry increments it.';
COMMENT ON COLUMN precompute.run_stages.rows_in IS 'Rows the stage read.';
COMMENT ON COLUMN precompute.run_stages.rows_out IS 'Rows the stage wrote.';
COMMENT ON COLUMN precompute.run_stages.rows_rejected IS 'Rows the stage rejected.';
COMMENT ON COLUMN precompute.run_stages.error IS 'Why the stage failed.';
COMMENT ON COLUMN precompute.run_stages.started_at IS 'When the latest attempt started.';
COMMENT ON COLUMN precompute.run_stages.finished_at IS 'When the latest attempt ended.';

CREATE TABLE precompute.run_metrics (
    run_id      text NOT NULL REFERENCES precompute.runs ON DELETE CASCADE,
    name        text NOT NULL,
    value       double precision,
    detail      jsonb,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, name)
);
COMMENT ON TABLE precompute.run_metrics IS
    'Per-run monitoring figures: score distribution, drift (PSI) and the like.';
COMMENT ON COLUMN precompute.run_metrics.run_id IS 'The run.';
COMMENT ON COLUMN precompute.run_metrics.name IS
    'Metric name, e.g. psi, score_mean, score_quantiles, score_histogram.';
COMMENT ON COLUMN precompute.run_metrics.value IS 'The figure, for a single-number metric.';
COMMENT ON COLUMN precompute.run_metrics.detail IS
    'Structured detail: histogram bins, quantiles.';
COMMENT ON COLUMN precompute.run_metrics.recorded_at IS 'When it was computed.';

GRANT SELECT, INSERT, UPDATE, DELETE ON
    precompute.runs, precompute.run_stages, precompute.run_metrics TO precompute_writer;
GRANT SELECT ON precompute.runs, precompute.run_stages, precompute.run_metrics
    TO precompute_reader;
