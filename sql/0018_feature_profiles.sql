-- Data quality and monitoring: the profile of every ingested batch and of every model
-- version's training data (jobs/profiles.py), each scoring run's feature drift against its
-- model's training profile (jobs/feature_drift.py), and the catalogue of ingested batches.

CREATE TABLE precompute.feature_profiles (
    profile_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject          text NOT NULL CHECK (subject IN ('batch', 'training')),
    dataset          text NOT NULL,
    contract_version integer NOT NULL CHECK (contract_version > 0),
    batch_id         text,
    run_id           text REFERENCES precompute.runs ON DELETE SET NULL,
    model_version_id bigint REFERENCES precompute.model_versions ON DELETE CASCADE,
    feature          text NOT NULL,
    type             text NOT NULL,
    rows             bigint NOT NULL CHECK (rows >= 0),
    missing          bigint NOT NULL CHECK (missing BETWEEN 0 AND rows),
    min_value        double precision,
    max_value        double precision,
    mean             double precision,
    std              double precision,
    quantiles        jsonb,
    bins             jsonb,
    top_values       jsonb,
    outside_share    double precision CHECK (outside_share BETWEEN 0 AND 1),
    first_time       timestamptz,
    last_time        timestamptz,
    profiled_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((subject = 'batch') = (batch_id IS NOT NULL)),
    CHECK ((subject = 'training') = (model_version_id IS NOT NULL))
);
CREATE UNIQUE INDEX feature_profiles_of_batches
    ON precompute.feature_profiles (dataset, batch_id, feature) WHERE subject = 'batch';
CREATE UNIQUE INDEX feature_profiles_of_training
    ON precompute.feature_profiles (model_version_id, feature) WHERE subject = 'training';
CREATE INDEX feature_profiles_by_dataset
    ON precompute.feature_profiles (dataset, subject, profile_id DESC);
COMMENT ON TABLE precompute.feature_profiles IS
    'Per feature: the profile of an ingested batch''s accepted rows (computed in the ingest''s '
    'own pass) or of a model version''s training data.';

CREATE TABLE precompute.feature_drift (
    run_id                 text NOT NULL REFERENCES precompute.runs ON DELETE CASCADE,
    feature                text NOT NULL,
    measure                text NOT NULL CHECK (measure IN ('psi', 'category_psi')),
    psi                    double precision NOT NULL,
    estimated              boolean NOT NULL,
    missing_share          double precision NOT NULL,
    training_missing_share double precision NOT NULL,
    level                  text NOT NULL CHECK (level IN ('ok', 'warn', 'fail')),
    thresholds             jsonb NOT NULL,
    detail                 jsonb NOT NULL,
    recorded_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, feature)
);
COMMENT ON TABLE precompute.feature_drift IS
    'Per scoring run and feature: drift of the batch against the model''s training profile, '
    'written by the run''s check.';

CREATE TABLE precompute.batches (
    dataset          text NOT NULL,
    batch_id         text NOT NULL,
    contract_version integer NOT NULL CHECK (contract_version > 0),
    input_path       text NOT NULL,
    format           text NOT NULL CHECK (format IN ('csv', 'json', 'parquet')),
    landed_at        timestamptz,
    ingested_at      timestamptz NOT NULL,
    ingest_run_id    text REFERENCES precompute.runs ON DELETE SET NULL,
    PRIMARY KEY (dataset, batch_id)
);
COMMENT ON TABLE precompute.batches IS 'Every ingested batch: where it came from and when.';

CREATE TABLE precompute.batch_files (
    dataset     text NOT NULL,
    batch_id    text NOT NULL,
    path        text NOT NULL,
    size_bytes  bigint CHECK (size_bytes >= 0),
    modified_at timestamptz,
    PRIMARY KEY (dataset, batch_id, path),
    FOREIGN KEY (dataset, batch_id) REFERENCES precompute.batches ON DELETE CASCADE
);
COMMENT ON TABLE precompute.batch_files IS 'The files of each ingested batch.';

COMMENT ON COLUMN precompute.feature_profiles.profile_id IS 'Row key.';
COMMENT ON COLUMN precompute.feature_profiles.subject IS 'batch (an ingested batch''s accepted rows) or training (a model version''s training data).';
COMMENT ON COLUMN precompute.feature_profiles.dataset IS 'Dataset (contract name).';
COMMENT ON COLUMN precompute.feature_profiles.contract_version IS 'Contract version the rows were read with.';
COMMENT ON COLUMN precompute.feature_profiles.batch_id IS 'The batch profiled; null for training.';
COMMENT ON COLUMN precompute.feature_profiles.run_id IS 'The ingest run that profiled it; null for training.';
COMMENT ON COLUMN precompute.feature_profiles.model_version_id IS 'The model version trained on the rows; null for batches.';
COMMENT ON COLUMN precompute.feature_profiles.feature IS 'Feature (contract column).';
COMMENT ON COLUMN precompute.feature_profiles.type IS 'The column''s contract type.';
COMMENT ON COLUMN precompute.feature_profiles.rows IS 'Rows profiled.';
COMMENT ON COLUMN precompute.feature_profiles.missing IS 'Rows where the feature is null (or NaN).';
COMMENT ON COLUMN precompute.feature_profiles.min_value IS 'Smallest value (numbers).';
COMMENT ON COLUMN precompute.feature_profiles.max_value IS 'Largest value (numbers).';
COMMENT ON COLUMN precompute.feature_profiles.mean IS 'Mean (numbers).';
COMMENT ON COLUMN precompute.feature_profiles.std IS 'Population standard deviation (numbers).';
COMMENT ON COLUMN precompute.feature_profiles.quantiles IS 'Quantiles p01..p99 (numbers): exact for training, from a KLL sketch for batches.';
COMMENT ON COLUMN precompute.feature_profiles.bins IS 'Training: the decile edges; batches: the count per training decile bin (numbers).';
COMMENT ON COLUMN precompute.feature_profiles.top_values IS 'Most frequent values with their counts (strings, booleans).';
COMMENT ON COLUMN precompute.feature_profiles.outside_share IS 'Share of values outside the contract''s allowed list (strings with a list).';
COMMENT ON COLUMN precompute.feature_profiles.first_time IS 'Earliest value (timestamps, dates).';
COMMENT ON COLUMN precompute.feature_profiles.last_time IS 'Latest value (timestamps, dates).';
COMMENT ON COLUMN precompute.feature_profiles.profiled_at IS 'When the profile was stored.';
COMMENT ON COLUMN precompute.feature_drift.run_id IS 'The scoring run.';
COMMENT ON COLUMN precompute.feature_drift.feature IS 'Feature (contract column).';
COMMENT ON COLUMN precompute.feature_drift.measure IS 'psi (numbers, on the training deciles) or category_psi (strings, booleans).';
COMMENT ON COLUMN precompute.feature_drift.psi IS 'Population stability index of the batch against training.';
COMMENT ON COLUMN precompute.feature_drift.estimated IS 'Whether the bin shares were read off quantiles (batch not counted on these bins).';
COMMENT ON COLUMN precompute.feature_drift.missing_share IS 'The batch''s share of missing values.';
COMMENT ON COLUMN precompute.feature_drift.training_missing_share IS 'The training data''s share of missing values.';
COMMENT ON COLUMN precompute.feature_drift.level IS 'ok, warn or fail, by the thresholds.';
COMMENT ON COLUMN precompute.feature_drift.thresholds IS 'The thresholds applied (settings, or the contract''s overrides).';
COMMENT ON COLUMN precompute.feature_drift.detail IS 'Bin shares of both sides, for the report.';
COMMENT ON COLUMN precompute.feature_drift.recorded_at IS 'When the check recorded it.';
COMMENT ON COLUMN precompute.batches.dataset IS 'Dataset (contract name).';
COMMENT ON COLUMN precompute.batches.batch_id IS 'Batch id.';
COMMENT ON COLUMN precompute.batches.contract_version IS 'Contract version it was read with.';
COMMENT ON COLUMN precompute.batches.input_path IS 'Where it was read from.';
COMMENT ON COLUMN precompute.batches.format IS 'csv, json or parquet.';
COMMENT ON COLUMN precompute.batches.landed_at IS 'When it landed (its folder''s modification time); null when not known.';
COMMENT ON COLUMN precompute.batches.ingested_at IS 'When it was ingested.';
COMMENT ON COLUMN precompute.batches.ingest_run_id IS 'The run that ingested it.';
COMMENT ON COLUMN precompute.batch_files.dataset IS 'Dataset (contract name).';
COMMENT ON COLUMN precompute.batch_files.batch_id IS 'Batch id.';
COMMENT ON COLUMN precompute.batch_files.path IS 'The file.';
COMMENT ON COLUMN precompute.batch_files.size_bytes IS 'Its size in bytes.';
COMMENT ON COLUMN precompute.batch_files.modified_at IS 'Its modification time.';

GRANT SELECT, INSERT, UPDATE, DELETE ON precompute.feature_profiles, precompute.feature_drift,
    precompute.batches, precompute.batch_files TO precompute_writer;
GRANT SELECT ON precompute.feature_profiles, precompute.feature_drift, precompute.batches,
    precompute.batch_files TO precompute_reader;

CREATE VIEW analytics.feature_profiles AS
SELECT p.subject,
       p.dataset,
       p.batch_id,
       m.name AS model,
       v.version,
       p.feature,
       p.type,
       p.rows,
       p.missing,
       CASE WHEN p.rows > 0 THEN p.missing::double precision / p.rows END AS missing_share,
       p.min_value,
       p.max_value,
       p.mean,
       p.std,
       (p.quantiles ->> 'p50')::double precision AS median,
       p.quantiles,
       p.bins,
       p.top_values,
       p.outside_share,
       p.first_time,
       p.last_time,
       p.run_id,
       p.profiled_at
FROM precompute.feature_profiles p
LEFT JOIN precompute.model_versions v ON v.version_id = p.model_version_id
LEFT JOIN precompute.models m ON m.model_id = v.model_id;
COMMENT ON VIEW analytics.feature_profiles IS
    'Feature profiles: one row per feature of each ingested batch (subject batch) and of each '
    'model version''s training data (subject training).';
COMMENT ON COLUMN analytics.feature_profiles.subject IS
    'batch (an ingested batch''s accepted rows) or training (a model version''s training rows).';
COMMENT ON COLUMN analytics.feature_profiles.dataset IS 'Dataset contract name.';
COMMENT ON COLUMN analytics.feature_profiles.batch_id IS 'The batch (batch profiles).';
COMMENT ON COLUMN analytics.feature_profiles.model IS 'Model name (training profiles).';
COMMENT ON COLUMN analytics.feature_profiles.version IS 'Model version (training profiles).';
COMMENT ON COLUMN analytics.feature_profiles.feature IS 'Column name in the contract.';
COMMENT ON COLUMN analytics.feature_profiles.type IS 'Contract type: long, double, string, ...';
COMMENT ON COLUMN analytics.feature_profiles.rows IS 'Rows profiled.';
COMMENT ON COLUMN analytics.feature_profiles.missing IS 'Rows without a value.';
COMMENT ON COLUMN analytics.feature_profiles.missing_share IS 'missing / rows.';
COMMENT ON COLUMN analytics.feature_profiles.min_value IS 'Smallest value (numbers).';
COMMENT ON COLUMN analytics.feature_profiles.max_value IS 'Largest value (numbers).';
COMMENT ON COLUMN analytics.feature_profiles.mean IS 'Mean (numbers).';
COMMENT ON COLUMN analytics.feature_profiles.std IS 'Population standard deviation (numbers).';
COMMENT ON COLUMN analytics.feature_profiles.median IS
    'Median (numbers); for batches from a KLL sketch (rank within about 0.3% of the rows).';
COMMENT ON COLUMN analytics.feature_profiles.quantiles IS
    'Quantiles p01, p05, p10, ..., p95, p99 (numbers), approximate as the median.';
COMMENT ON COLUMN analytics.feature_profiles.bins IS
    'Counts per bin on the training deciles: {"edges": [...], "counts": [...]}, bins '
    '(-inf, e0], (e0, e1], ..., (e_last, inf); for a batch, on the newest training profile''s '
    'edges at ingest.';
COMMENT ON COLUMN analytics.feature_profiles.top_values IS
    'Most frequent values with counts, most frequent first (strings, booleans); every allowed '
    'value for a column with an allowed list.';
COMMENT ON COLUMN analytics.feature_profiles.outside_share IS
    'Share of values outside the contract''s allowed list, over every row read (quarantined '
    'ones included).';
COMMENT ON COLUMN analytics.feature_profiles.first_time IS 'Earliest value (timestamps, dates).';
COMMENT ON COLUMN analytics.feature_profiles.last_time IS 'Latest value (timestamps, dates).';
COMMENT ON COLUMN analytics.feature_profiles.run_id IS 'The run that ingested the batch.';
COMMENT ON COLUMN analytics.feature_profiles.profiled_at IS 'When it was stored.';

CREATE VIEW analytics.feature_drift AS
SELECT d.run_id,
       r.batch_id,
       m.name AS model,
       v.version,
       d.feature,
       d.measure,
       d.psi,
       d.estimated,
       d.missing_share,
       d.training_missing_share,
       d.missing_share - d.training_missing_share AS missing_change,
       d.level,
       d.thresholds,
       d.detail,
       d.recorded_at
FROM precompute.feature_drift d
JOIN precompute.runs r USING (run_id)
LEFT JOIN precompute.model_versions v ON v.version_id = r.model_version_id
LEFT JOIN precompute.models m ON m.model_id = v.model_id;
COMMENT ON VIEW analytics.feature_drift IS
    'Per scoring run and feature: how far the batch drifted from the model''s training data.';
COMMENT ON COLUMN analytics.feature_drift.run_id IS 'The scoring run.';
COMMENT ON COLUMN analytics.feature_drift.batch_id IS 'The batch it scored.';
COMMENT ON COLUMN analytics.feature_drift.model IS 'Model name.';
COMMENT ON COLUMN analytics.feature_drift.version IS 'Model version it was compared with.';
COMMENT ON COLUMN analytics.feature_drift.feature IS 'Feature name.';
COMMENT ON COLUMN analytics.feature_drift.measure IS
    'psi: PSI over the training deciles (numbers); category_psi: PSI over the training '
    'categories plus one bucket for every other value (strings, booleans).';
COMMENT ON COLUMN analytics.feature_drift.psi IS
    'Population stability index: below 0.1 stable, 0.1-0.25 worth a look, above a shift.';
COMMENT ON COLUMN analytics.feature_drift.estimated IS
    'True when the batch was not counted on these bins at ingest (it was profiled before this '
    'model version was trained): both sides'' bin shares are then read off their quantiles.';
COMMENT ON COLUMN analytics.feature_drift.missing_share IS 'Batch rows without a value.';
COMMENT ON COLUMN analytics.feature_drift.training_missing_share IS
    'Training rows without a value.';
COMMENT ON COLUMN analytics.feature_drift.missing_change IS 'missing_share - training''s.';
COMMENT ON COLUMN analytics.feature_drift.level IS
    'ok, warn or fail, against the thresholds (settings, or the contract''s [features.drift]).';
COMMENT ON COLUMN analytics.feature_drift.thresholds IS 'The thresholds it was judged by.';
COMMENT ON COLUMN analytics.feature_drift.detail IS
    'The bins or categories with the expected (training) and actual (batch) shares.';
COMMENT ON COLUMN analytics.feature_drift.recorded_at IS 'When the check measured it.';

CREATE VIEW analytics.batches AS
SELECT b.dataset,
       b.batch_id,
       b.format,
       (SELECT count(*) FROM precompute.batch_files f
         WHERE f.dataset = b.dataset AND f.batch_id = b.batch_id) AS file_count,
       (SELECT sum(f.size_bytes) FROM precompute.batch_files f
         WHERE f.dataset = b.dataset AND f.batch_id = b.batch_id) AS total_bytes,
       i.rows_read,
       i.rows_accepted,
       i.rows_quarantined,
       b.landed_at,
       b.ingested_at,
       b.ingest_run_id,
       s.run_id AS scored_by_run,
       s.model AS scored_by_model,
       s.version AS scored_by_version,
       s.finished_at AS scored_at,
       b.input_path,
       b.contract_version
FROM precompute.batches b
LEFT JOIN precompute.runs i ON i.run_id = b.ingest_run_id
LEFT JOIN LATERAL (
    SELECT r.run_id, m.name AS model, v.version, r.finished_at
      FROM precompute.runs r
      JOIN precompute.model_versions v ON v.version_id = r.model_version_id
      JOIN precompute.models m ON m.model_id = v.model_id
     WHERE r.batch_id = b.batch_id AND r.rows_scored IS NOT NULL
       AND v.input_schema ->> 'dataset' = b.dataset
     ORDER BY r.created_at DESC LIMIT 1
) s ON true;
COMMENT ON VIEW analytics.batches IS
    'The batch catalogue: every ingested batch with its files, rows, when it landed and was '
    'ingested, and the newest run that scored it.';
COMMENT ON COLUMN analytics.batches.dataset IS 'Dataset contract name.';
COMMENT ON COLUMN analytics.batches.batch_id IS 'Batch id.';
COMMENT ON COLUMN analytics.batches.format IS 'csv, json (lines) or parquet.';
COMMENT ON COLUMN analytics.batches.file_count IS 'Files read.';
COMMENT ON COLUMN analytics.batches.total_bytes IS 'Their total size.';
COMMENT ON COLUMN analytics.batches.rows_read IS 'Rows read by the ingest.';
COMMENT ON COLUMN analytics.batches.rows_accepted IS 'Rows that passed validation.';
COMMENT ON COLUMN analytics.batches.rows_quarantined IS 'Rows rejected into quarantine.';
COMMENT ON COLUMN analytics.batches.landed_at IS
    'When it landed: the batch folder''s (or file''s) modification time.';
COMMENT ON COLUMN analytics.batches.ingested_at IS 'When the ingest appended it.';
COMMENT ON COLUMN analytics.batches.ingest_run_id IS 'The run that ingested it.';
COMMENT ON COLUMN analytics.batches.scored_by_run IS 'The newest run that scored it.';
COMMENT ON COLUMN analytics.batches.scored_by_model IS 'Its model.';
COMMENT ON COLUMN analytics.batches.scored_by_version IS 'Its model version.';
COMMENT ON COLUMN analytics.batches.scored_at IS 'When that run finished.';
COMMENT ON COLUMN analytics.batches.input_path IS 'The file or folder it was read from.';
COMMENT ON COLUMN analytics.batches.contract_version IS 'Contract version it was held to.';

CREATE VIEW analytics.batch_files AS
SELECT f.dataset, f.batch_id, f.path, b.format, f.size_bytes, f.modified_at
FROM precompute.batch_files f
JOIN precompute.batches b USING (dataset, batch_id);
COMMENT ON VIEW analytics.batch_files IS 'The files of each ingested batch.';
COMMENT ON COLUMN analytics.batch_files.dataset IS 'Dataset contract name.';
COMMENT ON COLUMN analytics.batch_files.batch_id IS 'Batch id.';
COMMENT ON COLUMN analytics.batch_files.path IS 'The file, as the ingest read it.';
COMMENT ON COLUMN analytics.batch_files.format IS 'csv, json (lines) or parquet.';
COMMENT ON COLUMN analytics.batch_files.size_bytes IS 'Its size.';
COMMENT ON COLUMN analytics.batch_files.modified_at IS 'Its modification time.';

GRANT SELECT ON analytics.feature_profiles, analytics.feature_drift, analytics.batches,
    analytics.batch_files TO precompute_reader, precompute_writer;
