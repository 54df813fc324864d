-- Each scoring run's HTML report, stored next to its records: the check after publish renders it
-- (jobs/run_report.py) and the lookup API serves it at GET /v1/runs/{run_id}/report. It goes
-- with its run: maintenance deletes old runs, and the cascade takes their reports.

CREATE TABLE precompute.run_reports (
    run_id     text PRIMARY KEY REFERENCES precompute.runs ON DELETE CASCADE,
    html       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE precompute.run_reports IS
    'One HTML report per run (row funnel, score distribution against the training reference, '
    'stage timings, a rescore''s comparison with the champion), written by the run''s check.';
COMMENT ON COLUMN precompute.run_reports.run_id IS 'The run.';
COMMENT ON COLUMN precompute.run_reports.html IS
    'A self-contained HTML page: inline styles, images as data: URLs, no script.';
COMMENT ON COLUMN precompute.run_reports.created_at IS
    'When it was rendered; a rerun of the check renders it again.';

GRANT SELECT, INSERT, UPDATE, DELETE ON precompute.run_reports TO precompute_writer;
GRANT SELECT ON precompute.run_reports TO precompute_reader, precompute_api;
