-- The lookup log's hourly traffic, for SQL analysts. Every lookup and batchGet is a record in
-- the Delta table lookup_log; the shipper (jobs/lookup_log.py) counts each hour it ships
-- records of again from that table and replaces the hour's rows here in one transaction, so an
-- hour is always counted whole, however many times and in whatever order its records arrive.

CREATE TABLE precompute.lookup_traffic (
    hour          timestamptz NOT NULL,
    model         text,
    version       integer,
    route         text NOT NULL,
    requests      bigint NOT NULL CHECK (requests > 0),
    hits          bigint NOT NULL CHECK (hits >= 0),
    misses        bigint NOT NULL CHECK (misses >= 0),
    client_errors bigint NOT NULL CHECK (client_errors >= 0),
    server_errors bigint NOT NULL CHECK (server_errors >= 0),
    p50_ms        double precision,
    p95_ms        double precision,
    max_ms        double precision,
    counted_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (hour = date_trunc('hour', hour, 'UTC'))
);
CREATE INDEX lookup_traffic_hour ON precompute.lookup_traffic (hour);
COMMENT ON TABLE precompute.lookup_traffic IS
    'Lookup API traffic per hour, model, version and route, counted from the Delta table '
    'lookup_log by the shipper (precompute lookup-log ship); read analytics.lookup_traffic.';
COMMENT ON COLUMN precompute.lookup_traffic.hour IS 'The hour (UTC) the requests ended in.';
COMMENT ON COLUMN precompute.lookup_traffic.model IS
    'The model asked for; null when the request named none the API knows (404, 400, 401).';
COMMENT ON COLUMN precompute.lookup_traffic.version IS
    'The version that answered (the alias''s at the time, or the one asked for); null as model.';
COMMENT ON COLUMN precompute.lookup_traffic.route IS
    'The route: /v1/predictions/{entity_id} (one id) or /v1/predictions:batchGet.';
COMMENT ON COLUMN precompute.lookup_traffic.requests IS 'HTTP requests, whatever their status.';
COMMENT ON COLUMN precompute.lookup_traffic.hits IS 'Entity ids asked for that had a prediction.';
COMMENT ON COLUMN precompute.lookup_traffic.misses IS
    'Entity ids asked for that had none (a batchGet''s missing ids; a lookup''s 404 not_scored).';
COMMENT ON COLUMN precompute.lookup_traffic.client_errors IS 'Requests answered 4xx.';
COMMENT ON COLUMN precompute.lookup_traffic.server_errors IS 'Requests answered 5xx.';
COMMENT ON COLUMN precompute.lookup_traffic.p50_ms IS
    'Median latency in the API, milliseconds (Spark''s percentile_approx).';
COMMENT ON COLUMN precompute.lookup_traffic.p95_ms IS '95th percentile latency, milliseconds.';
COMMENT ON COLUMN precompute.lookup_traffic.max_ms IS 'Slowest request, milliseconds.';
COMMENT ON COLUMN precompute.lookup_traffic.counted_at IS 'When the shipper last counted the hour.';

GRANT SELECT, INSERT, DELETE ON precompute.lookup_traffic TO precompute_writer;
GRANT SELECT ON precompute.lookup_traffic TO precompute_reader;

CREATE VIEW analytics.lookup_traffic AS
SELECT hour,
       model,
       version,
       route,
       requests,
       hits,
       misses,
       hits::float8 / NULLIF(hits + misses, 0) AS hit_rate,
       client_errors,
       server_errors,
       p50_ms,
       p95_ms,
       max_ms
FROM precompute.lookup_traffic;
COMMENT ON VIEW analytics.lookup_traffic IS
    'Lookup API traffic per hour (UTC), model, version and route: requests, hits and misses, '
    'errors, latency. Hours up to the last ship (the lookup_log DAG, hourly).';
COMMENT ON COLUMN analytics.lookup_traffic.hour IS 'The hour (UTC) the requests ended in.';
COMMENT ON COLUMN analytics.lookup_traffic.model IS
    'The model asked for; null when the request named none the API knows.';
COMMENT ON COLUMN analytics.lookup_traffic.version IS 'The version that answered.';
COMMENT ON COLUMN analytics.lookup_traffic.route IS
    '/v1/predictions/{entity_id} (one id) or /v1/predictions:batchGet.';
COMMENT ON COLUMN analytics.lookup_traffic.requests IS 'HTTP requests, whatever their status.';
COMMENT ON COLUMN analytics.lookup_traffic.hits IS 'Entity ids asked for that had a prediction.';
COMMENT ON COLUMN analytics.lookup_traffic.misses IS 'Entity ids asked for that had none.';
COMMENT ON COLUMN analytics.lookup_traffic.hit_rate IS
    'hits / (hits + misses); null when no id was looked up.';
COMMENT ON COLUMN analytics.lookup_traffic.client_errors IS 'Requests answered 4xx.';
COMMENT ON COLUMN analytics.lookup_traffic.server_errors IS 'Requests answered 5xx.';
COMMENT ON COLUMN analytics.lookup_traffic.p50_ms IS 'Median latency in the API, milliseconds.';
COMMENT ON COLUMN analytics.lookup_traffic.p95_ms IS '95th percentile latency, milliseconds.';
COMMENT ON COLUMN analytics.lookup_traffic.max_ms IS 'Slowest request, milliseconds.';

GRANT SELECT ON analytics.lookup_traffic TO precompute_reader, precompute_writer;
