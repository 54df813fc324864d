-- Scoring runs also score pending asynchronous score requests; they are counted on their own
-- so the run's rows still add up: scored = accepted + requested.

ALTER TABLE precompute.runs
    ADD COLUMN rows_requested bigint NOT NULL DEFAULT 0 CHECK (rows_requested >= 0);
COMMENT ON COLUMN precompute.runs.rows_requested IS
    'Asynchronous score requests the run scored, on top of the accepted batch rows.';
