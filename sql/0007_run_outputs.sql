-- What the score stage produced, so publish can find it; the second half of the row
-- conservation rule in the table itself.

ALTER TABLE precompute.runs
    ADD COLUMN scored_at timestamptz,
    ADD COLUMN predictions_version bigint CHECK (predictions_version >= 0),
    -- Every scored row is published; a publish that made a different number visible fails.
    ADD CONSTRAINT runs_published_equals_scored
        CHECK (rows_scored IS NULL OR rows_published IS NULL OR rows_published = rows_scored);
COMMENT ON COLUMN precompute.runs.scored_at IS
    'When the run scored its rows: every prediction of the run carries this time.';
COMMENT ON COLUMN precompute.runs.predictions_version IS
    'Version of the Delta predictions table that holds the run''s predictions.';

-- The partitions of precompute.predictions, one per served model version. Publish (the writer)
-- creates them in `staging` and moves them here when it attaches them. Readers query the
-- parent table, which needs no rights on the partitions themselves.
CREATE SCHEMA serving;
COMMENT ON SCHEMA serving IS
    'Partitions of precompute.predictions (one per served model version); query the parent.';
GRANT USAGE, CREATE ON SCHEMA serving TO precompute_writer;
