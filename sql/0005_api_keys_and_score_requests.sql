-- API keys for the lookup API, and asynchronous score requests for entities never scored.

CREATE TABLE precompute.api_keys (
    key_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 100),
    -- The first characters of the key, shown in listings so a user can tell keys apart.
    key_prefix   text NOT NULL CHECK (length(key_prefix) BETWEEN 4 AND 16),
    -- Only a hash is stored: the key itself is shown once, at creation.
    key_sha256   text NOT NULL UNIQUE CHECK (key_sha256 ~ '^[0-9a-f]{64}$'),
    scopes       text[] NOT NULL
                 CHECK (scopes <@ ARRAY['predictions:read', 'score-requests:write']
                        AND cardinality(scopes) > 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    last_used_at timestamptz
);
COMMENT ON TABLE precompute.api_keys IS
    'Lookup API keys: SHA-256 hashes only, never the keys. Not readable by the reader role.';
COMMENT ON COLUMN precompute.api_keys.key_id IS 'Surrogate key.';
COMMENT ON COLUMN precompute.api_keys.name IS 'Who or what the key is for.';
COMMENT ON COLUMN precompute.api_keys.key_prefix IS 'Leading characters of the key, for listings.';
COMMENT ON COLUMN precompute.api_keys.key_sha256 IS 'SHA-256 of the key, hex.';
COMMENT ON COLUMN precompute.api_keys.scopes IS 'predictions:read and/or score-requests:write.';
COMMENT ON COLUMN precompute.api_keys.created_at IS 'When the key was created.';
COMMENT ON COLUMN precompute.api_keys.revoked_at IS 'When it was revoked; null while valid.';
COMMENT ON COLUMN precompute.api_keys.last_used_at IS 'Last successful use (approximate).';

CREATE TABLE precompute.score_requests (
    request_id        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    model_id          bigint NOT NULL REFERENCES precompute.models,
    entity_id         text NOT NULL CHECK (length(entity_id) BETWEEN 1 AND 256),
    features          jsonb NOT NULL,
    state             text NOT NULL DEFAULT 'pending'
                      CHECK (state IN ('pending', 'scoring', 'done', 'failed')),
    api_key_id        bigint REFERENCES precompute.api_keys,
    run_id            text REFERENCES precompute.runs,
    model_version_id  bigint REFERENCES precompute.model_versions,
    score             double precision,
    label             text,
    error             text,
    callback_url      text,
    callback_state    text NOT NULL DEFAULT 'none'
                      CHECK (callback_state IN ('none', 'pending', 'delivered', 'failed')),
    callback_attempts integer NOT NULL DEFAULT 0 CHECK (callback_attempts >= 0),
    next_callback_at  timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (state <> 'done' OR score IS NOT NULL),
    CHECK (state <> 'failed' OR error IS NOT NULL)
);
-- The scoring run picks up pending requests oldest first.
CREATE INDEX score_requests_pending ON precompute.score_requests (model_id, created_at)
    WHERE state = 'pending';
CREATE INDEX score_requests_callbacks ON precompute.score_requests (next_callback_at)
    WHERE callback_state = 'pending';
COMMENT ON TABLE precompute.score_requests IS
    'Asynchronous score requests for entities not yet scored; the next run scores them.';
COMMENT ON COLUMN precompute.score_requests.request_id IS 'Id returned to the caller.';
COMMENT ON COLUMN precompute.score_requests.model_id IS 'Model asked for.';
COMMENT ON COLUMN precompute.score_requests.entity_id IS 'The entity to score.';
COMMENT ON COLUMN precompute.score_requests.features IS
    'Feature values, validated against the model input contract.';
COMMENT ON COLUMN precompute.score_requests.state IS 'pending, scoring, done or failed.';
COMMENT ON COLUMN precompute.score_requests.api_key_id IS 'The key that submitted it.';
COMMENT ON COLUMN precompute.score_requests.run_id IS 'The run that scored it.';
COMMENT ON COLUMN precompute.score_requests.model_version_id IS 'The version that scored it.';
COMMENT ON COLUMN precompute.score_requests.score IS 'The score, once done.';
COMMENT ON COLUMN precompute.score_requests.label IS 'Predicted class, once done (classifiers).';
COMMENT ON COLUMN precompute.score_requests.error IS 'Why it failed.';
COMMENT ON COLUMN precompute.score_requests.callback_url IS 'Optional URL that gets the result.';
COMMENT ON COLUMN precompute.score_requests.callback_state IS
    'none, pending, delivered or failed.';
COMMENT ON COLUMN precompute.score_requests.callback_attempts IS 'Callback deliveries tried.';
COMMENT ON COLUMN precompute.score_requests.next_callback_at IS 'When to try the callback again.';
COMMENT ON COLUMN precompute.score_requests.created_at IS 'When it was submitted.';
COMMENT ON COLUMN precompute.score_requests.updated_at IS 'When its state last changed.';

GRANT SELECT, INSERT, UPDATE, DELETE ON precompute.api_keys, precompute.score_requests
    TO precompute_writer;
-- Readers see requests without the features and callback target.
GRANT SELECT (request_id, model_id, entity_id, state, run_id, model_version_id, score, label,
              error, created_at, updated_at)
    ON precompute.score_requests TO precompute_reader;
