-- Multiclass models: every class's probability is served with the predicted label.
-- A nullable column with no default is added to the partitioned table and every partition
-- without rewriting a row; binary and regression predictions keep null in it.

ALTER TABLE precompute.predictions ADD COLUMN probabilities jsonb;
COMMENT ON COLUMN precompute.predictions.probabilities IS
    'A multiclass model''s probability of each class, {"class": probability}; null for binary '
    'classifiers and regressors.';

CREATE OR REPLACE VIEW analytics.current_predictions AS
SELECT m.name      AS model,
       v.version,
       p.entity_id,
       p.score,
       p.label,
       p.scored_at,
       p.run_id,
       p.probabilities
FROM precompute.model_aliases a
JOIN precompute.models m USING (model_id)
JOIN precompute.model_versions v ON v.version_id = a.version_id
JOIN precompute.predictions p ON p.model_version_id = a.version_id
WHERE a.alias = 'champion';
COMMENT ON COLUMN analytics.current_predictions.score IS
    'Positive-class probability (binary classifier), probability of the predicted class '
    '(multiclass) or predicted value (regressor).';
COMMENT ON COLUMN analytics.current_predictions.probabilities IS
    'Multiclass models: {"class": probability} for every class (analytics.current_class_'
    'probabilities has one row per class); null otherwise.';

CREATE VIEW analytics.current_class_probabilities AS
SELECT c.model,
       c.version,
       c.entity_id,
       k.key                 AS class,
       k.value::float8       AS probability,
       k.key = c.label       AS predicted,
       c.scored_at,
       c.run_id
FROM analytics.current_predictions c
CROSS JOIN LATERAL jsonb_each_text(c.probabilities) AS k
WHERE c.probabilities IS NOT NULL;
COMMENT ON VIEW analytics.current_class_probabilities IS
    'Multiclass champions'' predictions, one row per entity and class: filter on class and '
    'probability (e.g. WHERE class = ''churn'' AND probability > 0.8).';
COMMENT ON COLUMN analytics.current_class_probabilities.model IS 'Model name.';
COMMENT ON COLUMN analytics.current_class_probabilities.version IS 'Champion version number.';
COMMENT ON COLUMN analytics.current_class_probabilities.entity_id IS 'Entity key.';
COMMENT ON COLUMN analytics.current_class_probabilities.class IS 'A class the model predicts.';
COMMENT ON COLUMN analytics.current_class_probabilities.probability IS
    'The model''s probability of that class for the entity.';
COMMENT ON COLUMN analytics.current_class_probabilities.predicted IS
    'Whether it is the predicted class (the label).';
COMMENT ON COLUMN analytics.current_class_probabilities.scored_at IS 'When it was scored.';
COMMENT ON COLUMN analytics.current_class_probabilities.run_id IS 'Run that published it.';

GRANT SELECT ON analytics.current_class_probabilities TO precompute_reader, precompute_writer;
