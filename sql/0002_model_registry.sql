-- Model registry: models, their versions (one per registered MLeap bundle) and aliases.

CREATE TABLE precompute.models (
    model_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    task        text NOT NULL CHECK (task IN ('classification', 'regression')),
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE precompute.models IS 'One row per model name; versions hang off it.';
COMMENT ON COLUMN precompute.models.model_id IS 'Surrogate key.';
COMMENT ON COLUMN precompute.models.name IS 'Model name used in the API and DAG params.';
COMMENT ON COLUMN precompute.models.task IS 'classification or regression.';
COMMENT ON COLUMN precompute.models.description IS 'Free text: what the model predicts.';
COMMENT ON COLUMN precompute.models.created_at IS 'When the first version was registered.';

CREATE TABLE precompute.model_versions (
    -- Global id: the serving predictions are partitioned by it.
    version_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_id         bigint NOT NULL REFERENCES precompute.models,
    version          integer NOT NULL CHECK (version > 0),
    model_kind       text NOT NULL,
    bundle_uri       text NOT NULL,
    bundle_sha256    text NOT NULL CHECK (bundle_sha256 ~ '^[0-9a-f]{64}$'),
    input_schema     jsonb NOT NULL,
    metrics          jsonb NOT NULL DEFAULT '{}',
    training_data    jsonb,
    reference_scores jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (model_id, version),
    -- Lets aliases reference (model, version) so an alias cannot point at another model.
    UNIQUE (model_id, version_id)
);
COMMENT ON TABLE precompute.model_versions IS
    'Registered model versions: one trained MLeap bundle each, immutable once registered.';
COMMENT ON COLUMN precompute.model_versions.version_id IS
    'Global version id; the key of the serving predictions.';
COMMENT ON COLUMN precompute.model_versions.model_id IS 'The model this version belongs to.';
COMMENT ON COLUMN precompute.model_versions.version IS 'Version number within the model: 1, 2, ...';
COMMENT ON COLUMN precompute.model_versions.model_kind IS
    'Estimator: logistic_regression, linear_regression, random_forest, decision_tree, ...';
COMMENT ON COLUMN precompute.model_versions.bundle_uri IS 'Where the Bundle.ML file is stored.';
COMMENT ON COLUMN precompute.model_versions.bundle_sha256 IS
    'SHA-256 of the bundle file; a bundle that no longer matches is refused at load.';
COMMENT ON COLUMN precompute.model_versions.input_schema IS
    'Input contract the bundle expects: entity id and feature columns with types.';
COMMENT ON COLUMN precompute.model_versions.metrics IS
    'Validation metrics from training (AUC, log loss, accuracy, RMSE, ...).';
COMMENT ON COLUMN precompute.model_versions.training_data IS
    'Training data reference: Delta table URI and table version.';
COMMENT ON COLUMN precompute.model_versions.reference_scores IS
    'Validation-set score distribution, the baseline for drift (PSI).';
COMMENT ON COLUMN precompute.model_versions.created_at IS 'When the version was registered.';

CREATE TABLE precompute.model_aliases (
    model_id   bigint NOT NULL REFERENCES precompute.models,
    alias      text NOT NULL CHECK (alias ~ '^[a-z][a-z0-9_-]{0,62}$'),
    version_id bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_id, alias),
    FOREIGN KEY (model_id, version_id) REFERENCES precompute.model_versions (model_id, version_id)
);
COMMENT ON TABLE precompute.model_aliases IS
    'Named pointers to versions (champion, challenger, ...). Moving one is a single-row update: '
    'lookups switch version in that transaction, with no republish.';
COMMENT ON COLUMN precompute.model_aliases.model_id IS 'The model.';
COMMENT ON COLUMN precompute.model_aliases.alias IS 'Alias name, e.g. champion or challenger.';
COMMENT ON COLUMN precompute.model_aliases.version_id IS 'The version the alias points at.';
COMMENT ON COLUMN precompute.model_aliases.updated_at IS 'When the alias last moved.';

CREATE TABLE precompute.model_alias_history (
    event_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_id        bigint NOT NULL REFERENCES precompute.models,
    alias           text NOT NULL,
    from_version_id bigint REFERENCES precompute.model_versions,
    to_version_id   bigint REFERENCES precompute.model_versions,
    moved_at        timestamptz NOT NULL DEFAULT now(),
    moved_by        text NOT NULL DEFAULT current_user
);
CREATE INDEX model_alias_history_lookup
    ON precompute.model_alias_history (model_id, alias, event_id DESC);
COMMENT ON TABLE precompute.model_alias_history IS
    'Every alias move, written by a trigger in the same transaction; rollback reads it.';
COMMENT ON COLUMN precompute.model_alias_history.event_id IS 'Order of the moves.';
COMMENT ON COLUMN precompute.model_alias_history.model_id IS 'The model.';
COMMENT ON COLUMN precompute.model_alias_history.alias IS 'The alias that moved.';
COMMENT ON COLUMN precompute.model_alias_history.from_version_id IS
    'Version before the move; null when the alias was created.';
COMMENT ON COLUMN precompute.model_alias_history.to_version_id IS
    'Version after the move; null when the alias was removed.';
COMMENT ON COLUMN precompute.model_alias_history.moved_at IS 'When it moved.';
COMMENT ON COLUMN precompute.model_alias_history.moved_by IS 'Database role that moved it.';

CREATE FUNCTION precompute.record_alias_move() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO precompute.model_alias_history (model_id, alias, from_version_id, to_version_id)
        VALUES (NEW.model_id, NEW.alias, NULL, NEW.version_id);
    ELSIF TG_OP = 'UPDATE' THEN
        IF NEW.version_id IS DISTINCT FROM OLD.version_id THEN
            INSERT INTO precompute.model_alias_history
                (model_id, alias, from_version_id, to_version_id)
            VALUES (NEW.model_id, NEW.alias, OLD.version_id, NEW.version_id);
        END IF;
    ELSE
        INSERT INTO precompute.model_alias_history (model_id, alias, from_version_id, to_version_id)
        VALUES (OLD.model_id, OLD.alias, OLD.version_id, NULL);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER model_aliases_history
    AFTER INSERT OR UPDATE OR DELETE ON precompute.model_aliases
    FOR EACH ROW EXECUTE FUNCTION precompute.record_alias_move();

GRANT SELECT, INSERT, UPDATE, DELETE ON
    precompute.models, precompute.model_versions, precompute.model_aliases
    TO precompute_writer;
GRANT SELECT, INSERT ON precompute.model_alias_history TO precompute_writer;
GRANT SELECT ON
    precompute.models, precompute.model_versions, precompute.model_aliases,
    precompute.model_alias_history
    TO precompute_reader;
