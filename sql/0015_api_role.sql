-- The lookup API's own role, and what its score requests need from the schema.
-- precompute_api: the lookup API. Before this it wrote as precompute_writer, which may move
-- aliases, rewrite runs and un-revoke keys; a bug or an injection in the API could do as much.
-- This role reads what the API serves, queues score requests and checks keys through
-- precompute.api_key_for(); it cannot read key hashes or any request's features, change what it
-- has written, or create anything. Like the others it is created only where missing (roles are
-- cluster-wide) and its password comes from the settings at migrate time.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'precompute_api') THEN
        CREATE ROLE precompute_api LOGIN;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO precompute_api', current_database());
    -- Temporary tables are granted to PUBLIC by default; no role here uses them, and without
    -- this the API role could still create objects (in its temporary schema).
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO precompute_writer', current_database());
END
$$;

GRANT USAGE ON SCHEMA precompute, analytics TO precompute_api;

-- Lookups and the model routes: the registry without the bundles' locations and training data.
GRANT SELECT (model_id, name, task, description) ON precompute.models TO precompute_api;
GRANT SELECT (version_id, model_id, version, model_kind, input_schema, metrics, created_at)
    ON precompute.model_versions TO precompute_api;
GRANT SELECT (model_id, alias, version_id) ON precompute.model_aliases TO precompute_api;
GRANT SELECT ON precompute.predictions TO precompute_api;
GRANT SELECT (model_version_id, row_count, published_at)
    ON precompute.serving_versions TO precompute_api;

-- GET /v1/runs/{id}: the analysts' views of a run (counts, drift) and of its stages.
GRANT SELECT ON analytics.runs, analytics.run_stages TO precompute_api;

GRANT EXECUTE ON FUNCTION precompute.api_key_for(text) TO precompute_api;

-- Idempotent submission: a client that sends the same Idempotency-Key again (after a lost reply)
-- gets the request it already made instead of a second one. Keys are per API key, and the hash
-- of the request tells a replay from a different request under a reused key.
ALTER TABLE precompute.score_requests
    ADD COLUMN idempotency_key text CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    ADD COLUMN request_sha256 text CHECK (request_sha256 ~ '^[0-9a-f]{64}$');
CREATE UNIQUE INDEX score_requests_idempotency
    ON precompute.score_requests (api_key_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Every submission counts the key's waiting requests (the 429 limit).
CREATE INDEX score_requests_waiting_by_key ON precompute.score_requests (api_key_id)
    WHERE state IN ('pending', 'scoring');
COMMENT ON COLUMN precompute.score_requests.idempotency_key IS
    'The Idempotency-Key header the request was submitted with, unique per API key; null if none.';
COMMENT ON COLUMN precompute.score_requests.request_sha256 IS
    'SHA-256 of the submitted request (model, entity, features, callback), to tell a replay '
    'from a different request sent under the same Idempotency-Key.';

-- The API inserts requests and reads back what its own answers and checks need: the owner (a
-- request is shown only to the key that made it), the state and result. Never the features or
-- the callback target, and it can neither change nor delete a request.
GRANT INSERT (request_id, model_id, entity_id, features, api_key_id, callback_url,
              idempotency_key, request_sha256)
    ON precompute.score_requests TO precompute_api;
GRANT SELECT (request_id, model_id, entity_id, state, api_key_id, run_id, model_version_id,
              score, label, error, created_at, updated_at, idempotency_key, request_sha256)
    ON precompute.score_requests TO precompute_api;
