-- Serving predictions, partitioned by model version.
-- Each served version is one partition, so publishing a full rescore builds a new table and
-- swaps it in (detach old, attach new) in one transaction, and an incremental batch is an
-- upsert into one partition in one transaction. Which version a lookup reads is decided by
-- model_aliases, so promote and rollback move one row and need no republish.

CREATE TABLE precompute.predictions (
    model_version_id bigint NOT NULL,
    entity_id        text NOT NULL,
    score            double precision NOT NULL,
    label            text,
    scored_at        timestamptz NOT NULL,
    run_id           text NOT NULL,
    PRIMARY KEY (model_version_id, entity_id)
) PARTITION BY LIST (model_version_id);
-- The publish job (writer) creates, attaches and detaches partitions, which needs ownership.
ALTER TABLE precompute.predictions OWNER TO precompute_writer;
COMMENT ON TABLE precompute.predictions IS
    'Served predictions, one partition per model version; analysts: see '
    'analytics.current_predictions.';
COMMENT ON COLUMN precompute.predictions.model_version_id IS
    'The model version that made the prediction (model_versions.version_id).';
COMMENT ON COLUMN precompute.predictions.entity_id IS 'Key the prediction is looked up by.';
COMMENT ON COLUMN precompute.predictions.score IS
    'Score: positive-class probability for a classifier, the prediction for a regressor.';
COMMENT ON COLUMN precompute.predictions.label IS 'Predicted class; null for a regressor.';
COMMENT ON COLUMN precompute.predictions.scored_at IS 'When the scoring run scored the row.';
COMMENT ON COLUMN precompute.predictions.run_id IS 'The run that published the prediction.';

CREATE TABLE precompute.serving_versions (
    model_version_id bigint PRIMARY KEY REFERENCES precompute.model_versions,
    row_count        bigint NOT NULL CHECK (row_count >= 0),
    last_run_id      text NOT NULL REFERENCES precompute.runs,
    published_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE precompute.serving_versions IS
    'Model versions that have predictions in serving, with the run that last published.';
COMMENT ON COLUMN precompute.serving_versions.model_version_id IS 'The served version.';
COMMENT ON COLUMN precompute.serving_versions.row_count IS 'Predictions held for it.';
COMMENT ON COLUMN precompute.serving_versions.last_run_id IS 'The run that last published it.';
COMMENT ON COLUMN precompute.serving_versions.published_at IS 'When that run was published.';

CREATE TABLE precompute.published_runs (
    run_id           text PRIMARY KEY REFERENCES precompute.runs,
    model_version_id bigint NOT NULL REFERENCES precompute.model_versions,
    mode             text NOT NULL CHECK (mode IN ('incremental', 'full')),
    row_count        bigint NOT NULL CHECK (row_count >= 0),
    published_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE precompute.published_runs IS
    'Runs whose predictions were published; written in the publishing transaction, so a '
    'rerun of a published run is a no-op.';
COMMENT ON COLUMN precompute.published_runs.run_id IS 'The run.';
COMMENT ON COLUMN precompute.published_runs.model_version_id IS 'Its model version.';
COMMENT ON COLUMN precompute.published_runs.mode IS 'incremental (upsert) or full (swap).';
COMMENT ON COLUMN precompute.published_runs.row_count IS 'Predictions it published.';
COMMENT ON COLUMN precompute.published_runs.published_at IS 'When its transaction committed.';

GRANT SELECT ON precompute.predictions, precompute.serving_versions, precompute.published_runs
    TO precompute_reader;
GRANT SELECT, INSERT, UPDATE, DELETE ON precompute.serving_versions, precompute.published_runs
    TO precompute_writer;
