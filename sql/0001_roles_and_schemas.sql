-- Roles and schemas.
-- precompute_writer: the batch jobs (ingest/score/publish, registry writes).
-- precompute_reader: the lookup API and analysts; it can read, never change anything.
-- Roles are cluster-wide: create them only where missing, so that several databases on one
-- server (or a re-created database) share them. Passwords come from the settings at migrate
-- time, never from these files.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'precompute_writer') THEN
        CREATE ROLE precompute_writer LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'precompute_reader') THEN
        CREATE ROLE precompute_reader LOGIN;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO precompute_writer, precompute_reader',
                   current_database());
END
$$;

-- A second guard for the reader: even if a grant slipped, its sessions start read-only.
ALTER ROLE precompute_reader SET default_transaction_read_only = on;

-- The migrator created this schema for its bookkeeping table; the tables live here too.
COMMENT ON SCHEMA precompute IS
    'Platform tables: model registry, scoring runs, serving predictions, score requests.';
GRANT USAGE ON SCHEMA precompute TO precompute_writer, precompute_reader;
GRANT SELECT ON precompute.schema_migrations TO precompute_writer, precompute_reader;
COMMENT ON COLUMN precompute.schema_migrations.version IS 'Number at the start of the file name.';
COMMENT ON COLUMN precompute.schema_migrations.name IS 'Rest of the file name, without .sql.';
COMMENT ON COLUMN precompute.schema_migrations.checksum IS 'SHA-256 of the file as applied.';
COMMENT ON COLUMN precompute.schema_migrations.applied_at IS 'When the migration committed.';
COMMENT ON COLUMN precompute.schema_migrations.duration_ms IS 'How long the migration ran.';

CREATE SCHEMA analytics;
COMMENT ON SCHEMA analytics IS
    'Documented views for analysts (read-only role precompute_reader): start here.';
GRANT USAGE ON SCHEMA analytics TO precompute_writer, precompute_reader;

-- Publish builds its staging tables here; readers have no access to half-loaded data.
CREATE SCHEMA staging;
COMMENT ON SCHEMA staging IS 'Scratch tables of the publish job; not for readers.';
GRANT USAGE, CREATE ON SCHEMA staging TO precompute_writer;
