-- Views for analysts: the documented way in. They join ids to names so a query needs no
-- knowledge of the registry's keys.

CREATE VIEW analytics.model_versions AS
SELECT m.name          AS model,
       v.version,
       v.version_id,
       m.task,
       v.model_kind,
       COALESCE((SELECT array_agg(a.alias ORDER BY a.alias)
                 FROM precompute.model_aliases a
                 WHERE a.version_id = v.version_id), '{}') AS aliases,
       v.metrics,
       v.training_data,
       v.created_at    AS registered_at,
       s.row_count     AS served_predictions,
       s.published_at  AS last_published_at
FROM precompute.model_versions v
JOIN precompute.models m USING (model_id)
LEFT JOIN precompute.serving_versions s ON s.model_version_id = v.version_id;
COMMENT ON VIEW analytics.model_versions IS
    'Every registered model version with its aliases, metrics and serving state.';
COMMENT ON COLUMN analytics.model_versions.model IS 'Model name.';
COMMENT ON COLUMN analytics.model_versions.version IS 'Version number within the model.';
COMMENT ON COLUMN analytics.model_versions.version_id IS 'Global version id.';
COMMENT ON COLUMN analytics.model_versions.task IS 'classification or regression.';
COMMENT ON COLUMN analytics.model_versions.model_kind IS 'Estimator kind.';
COMMENT ON COLUMN analytics.model_versions.aliases IS 'Aliases pointing at it (champion, ...).';
COMMENT ON COLUMN analytics.model_versions.metrics IS 'Validation metrics from training.';
COMMENT ON COLUMN analytics.model_versions.training_data IS 'Training table and its version.';
COMMENT ON COLUMN analytics.model_versions.registered_at IS 'When it was registered.';
COMMENT ON COLUMN analytics.model_versions.served_predictions IS
    'Predictions held in serving for it; null if none were published.';
COMMENT ON COLUMN analytics.model_versions.last_published_at IS 'Its last publish.';

CREATE VIEW analytics.current_predictions AS
SELECT m.name      AS model,
       v.version,
       p.entity_id,
       p.score,
       p.label,
       p.scored_at,
       p.run_id
FROM precompute.model_aliases a
JOIN precompute.models m USING (model_id)
JOIN precompute.model_versions v ON v.version_id = a.version_id
JOIN precompute.predictions p ON p.model_version_id = a.version_id
WHERE a.alias = 'champion';
COMMENT ON VIEW analytics.current_predictions IS
    'The predictions the lookup API serves by default: each model''s champion version.';
COMMENT ON COLUMN analytics.current_predictions.model IS 'Model name.';
COMMENT ON COLUMN analytics.current_predictions.version IS 'Champion version number.';
COMMENT ON COLUMN analytics.current_predictions.entity_id IS 'Entity key.';
COMMENT ON COLUMN analytics.current_predictions.score IS
    'Positive-class probability (classifier) or predicted value (regressor).';
COMMENT ON COLUMN analytics.current_predictions.label IS 'Predicted class (classifiers).';
COMMENT ON COLUMN analytics.current_predictions.scored_at IS 'When it was scored.';
COMMENT ON COLUMN analytics.current_predictions.run_id IS 'Run that published it.';

CREATE VIEW analytics.runs AS
SELECT r.run_id,
       r.mode,
       r.batch_id,
       m.name AS model,
       v.version,
       r.state,
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
       r.finished_at - r.started_at AS duration
FROM precompute.runs r
LEFT JOIN precompute.model_versions v ON v.version_id = r.model_version_id
LEFT JOIN precompute.models m ON m.model_id = v.model_id;
COMMENT ON VIEW analytics.runs IS 'Scoring runs with model names, counts and drift.';
COMMENT ON COLUMN analytics.runs.run_id IS 'Run id.';
COMMENT ON COLUMN analytics.runs.mode IS 'incremental or full.';
COMMENT ON COLUMN analytics.runs.batch_id IS 'Ingested batch (incremental runs).';
COMMENT ON COLUMN analytics.runs.model IS 'Model name.';
COMMENT ON COLUMN analytics.runs.version IS 'Model version number.';
COMMENT ON COLUMN analytics.runs.state IS 'queued, running, succeeded or failed.';
COMMENT ON COLUMN analytics.runs.rows_read IS 'Rows read.';
COMMENT ON COLUMN analytics.runs.rows_accepted IS 'Rows that passed validation.';
COMMENT ON COLUMN analytics.runs.rows_quarantined IS 'Rows rejected into quarantine.';
COMMENT ON COLUMN analytics.runs.rows_scored IS 'Rows scored.';
COMMENT ON COLUMN analytics.runs.rows_published IS 'Predictions published.';
COMMENT ON COLUMN analytics.runs.rejected_share IS 'rows_quarantined / rows_read.';
COMMENT ON COLUMN analytics.runs.psi IS
    'Population stability index of the scores against the training reference.';
COMMENT ON COLUMN analytics.runs.error IS 'Why it failed.';
COMMENT ON COLUMN analytics.runs.started_at IS 'Start.';
COMMENT ON COLUMN analytics.runs.finished_at IS 'End.';
COMMENT ON COLUMN analytics.runs.duration IS 'finished_at - started_at.';

CREATE VIEW analytics.run_metrics AS
SELECT rm.run_id, rm.name AS metric, rm.value, rm.detail, rm.recorded_at
FROM precompute.run_metrics rm;
COMMENT ON VIEW analytics.run_metrics IS 'Per-run monitoring figures (distribution, drift).';
COMMENT ON COLUMN analytics.run_metrics.run_id IS 'Run id.';
COMMENT ON COLUMN analytics.run_metrics.metric IS 'Metric name.';
COMMENT ON COLUMN analytics.run_metrics.value IS 'Single-number value.';
COMMENT ON COLUMN analytics.run_metrics.detail IS 'Histogram bins, quantiles.';
COMMENT ON COLUMN analytics.run_metrics.recorded_at IS 'When it was computed.';

GRANT SELECT ON ALL TABLES IN SCHEMA analytics TO precompute_reader, precompute_writer;
