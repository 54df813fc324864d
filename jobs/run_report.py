"""A scoring run's HTML report, rendered from its records and stored next to them.

What it shows: the row funnel (read, accepted, quarantined by reason, scored, published), the
score distribution against the model version's training reference with its PSI, each
feature's drift against the training data with histograms of the most drifted, the stage
timings, and for a full rescore the comparison with what the champion serves for the same
entities. The page is one self-contained HTML document (its sections: `jobs.report_sections`):
inline styles, the charts as SVG images in `data:` URLs (`jobs.report_charts`), no script and
nothing loaded from anywhere, so it reads the same served by the lookup API
(`GET /v1/runs/{run_id}/report`), saved to a file or mailed.
A failed run gets one too, showing where it stopped. Every text from the data is escaped.

The run's check (`jobs.run_check`) renders and stores it in `precompute.run_reports`; the
figures are read from `precompute.runs`, `analytics.run_stages`, `precompute.run_metrics` and
the registry, and the rescore comparison is aggregated in SQL on the serving store.
"""

from __future__ import annotations

import datetime
import sys
from html import escape
from typing import Any
from urllib.parse import quote

from jobs import report_drift
from jobs import report_sections as sections
from jobs.run_records import QUARANTINE_REASONS
from precompute import serving_store as store
from precompute.database import Database
from precompute.errors import PrecomputeError
from precompute.names import CHAMPION, RUN_REPORT_PATH
from precompute.settings import Settings

# The stages each mode of run goes through, in order (the check last).
STAGES = {
    "incremental": ("ingest", "score", "publish", "check"),
    "full": ("score", "publish", "check"),
    "requests": ("score", "publish", "check"),
}
DIFFERENCE_BINS = 20

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; color: #222; max-width: 60rem; margin: 1.5rem auto;
       padding: 0 1rem; }
h1 { font-size: 1.5rem; word-break: break-all; } h2 { font-size: 1.2rem; margin-top: 2rem;
       border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .5rem 0; } th, td { padding: .2rem .7rem;
       border-bottom: 1px solid #e4e4e4; text-align: left; vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; display: block; margin: .5rem 0; }
.state { display: inline-block; padding: .1rem .5rem; border-radius: .3rem; color: #fff;
       background: #777; } .succeeded { background: #2e7d32; } .failed, .abandoned
       { background: #c62828; } .running { background: #1565c0; }
.error { background: #fdecea; border-left: 4px solid #c62828; padding: .5rem .8rem;
       white-space: pre-wrap; word-break: break-word; }
.note { color: #555; font-size: .9rem; } code { word-break: break-all; }
"""


class ReportError(PrecomputeError):
    """A report was asked for a run that is not recorded."""


def report_url(settings: Settings, run_id: str) -> str:
    """Where the lookup API serves the run's report."""
    base = settings.api_public_url or f"http://{settings.api_host}:{settings.api_port}"
    return base.rstrip("/") + RUN_REPORT_PATH.format(run_id=quote(run_id, safe=""))


def write_report(settings: Settings, db: Database, run_id: str) -> None:
    """Render and store the run's report, and print where the lookup API serves it: called
    last by the check and by a stage that failed, so it is the last line of their own in the
    task's log. A report that cannot be made is said on stderr and changes no outcome."""
    try:
        store_report(db, run_id, render_report(db, run_id))
    except Exception as exc:  # the stage's own outcome stands: say loudly what is missing
        print(f"warning: no report for run {run_id}: {exc}", file=sys.stderr)
        return
    print(f"report: {report_url(settings, run_id)}", flush=True)


def store_report(db: Database, run_id: str, html: str) -> None:
    """Keep the run's report; a later check of the same run replaces it."""
    with db.transaction("writer") as cursor:
        cursor.execute(
            """
            INSERT INTO precompute.run_reports (run_id, html) VALUES (%s, %s)
            ON CONFLICT (run_id) DO UPDATE SET html = EXCLUDED.html, created_at = now()
            """,
            (run_id, html),
        )


def stored_report(db: Database, run_id: str) -> str | None:
    """The report the run's check stored, None when there is none."""
    rows = db.fetch(
        "writer", "SELECT html FROM precompute.run_reports WHERE run_id = %s", (run_id,)
    )
    return str(rows[0][0]) if rows else None


def render_report(db: Database, run_id: str) -> str:
    """The run's report as one HTML page, from what its records say now."""
    runs = _records(
        db,
        """
        SELECT r.run_id, r.mode, r.batch_id, a.state, r.error, m.name AS model, v.version,
               m.task, r.model_version_id, v.model_id, v.reference_scores, r.rows_read,
               r.rows_accepted, r.rows_quarantined, r.rows_requested, r.rows_scored,
               r.rows_published, r.rows_unpublished, r.created_at, r.started_at, r.finished_at
          FROM precompute.runs r
          JOIN analytics.runs a USING (run_id)
          LEFT JOIN precompute.model_versions v ON v.version_id = r.model_version_id
          LEFT JOIN precompute.models m ON m.model_id = v.model_id
         WHERE r.run_id = %s
        """,
        (run_id,),
    )
    if not runs:
        raise ReportError(f"run {run_id!r} is not recorded: no report to make")
    run = runs[0]
    stages = _records(
        db,
        """
        SELECT stage, attempt, attempts, state, started_at, finished_at,
               extract(epoch FROM duration)::float8 AS seconds, rows_in, rows_out, error
          FROM analytics.run_stages WHERE run_id = %s ORDER BY started_at
        """,
        (run_id,),
    )
    metrics = {
        name: (value, detail)
        for name, value, detail in db.fetch(
            "writer",
            "SELECT name, value, detail FROM precompute.run_metrics WHERE run_id = %s",
            (run_id,),
        )
    }
    body = [
        sections.summary(run, stopped_at(run, stages)),
        sections.funnel(run, metrics.get(QUARANTINE_REASONS), metrics.get("unpublished_ids")),
        sections.scores(run, metrics),
        report_drift.feature_drift(db, run_id),
        sections.timings(run, stages, STAGES.get(run["mode"], ())),
    ]
    if run["mode"] == "full":
        body.append(sections.comparison(run, *champion_comparison(db, run)))
    generated = datetime.datetime.now(datetime.UTC)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Run {escape(run_id)}</title><style>{STYLE}</style></head><body>"
        + "".join(body)
        + f'<p class="note">Rendered {sections.when(generated)} from the run records.</p>'
        "</body></html>\n"
    )


def stopped_at(run: dict[str, Any], stages: list[dict[str, Any]]) -> str | None:
    """For a run that did not succeed: the stage it stopped at (failed, abandoned, still
    running, or the first one never reached); None for a run that succeeded."""
    if run["state"] == "succeeded":
        return None
    by_stage = {s["stage"]: s for s in stages}
    for stage in STAGES.get(run["mode"], ()):
        found = by_stage.get(stage)
        if found is None or found["state"] not in ("succeeded", "skipped"):
            return stage
    return None


def champion_comparison(
    db: Database, run: dict[str, Any]
) -> tuple[str | None, dict[str, Any] | None]:
    """A rescore against the champion's served predictions for the same entities: (a note
    saying why there is no comparison, None) or (None, the figures). Aggregated in SQL: only
    the figures and the histogram of differences leave the database."""
    if run["model_version_id"] is None:
        return "The run scored nothing: there is nothing to compare.", None
    champions = db.fetch(
        "writer",
        f"""
        SELECT a.version_id, v.version FROM {store.MODEL_ALIASES} a
          JOIN {store.MODEL_VERSIONS} v USING (version_id)
         WHERE a.model_id = %s AND a.alias = %s
        """,
        (run["model_id"], CHAMPION),
    )
    if not champions:
        return f"The model has no {CHAMPION}: there is nothing to compare with.", None
    champion_id, champion_version = champions[0]
    if champion_id == run["model_version_id"]:
        return (
            f"This run rescored the {CHAMPION} (v{champion_version}) itself: its predictions "
            "replaced what was served, so there is no other version to compare with.",
            None,
        )
    [figures] = _records(
        db,
        f"""
        WITH pairs AS MATERIALIZED (
            SELECT n.score - c.score AS diff, n.label IS DISTINCT FROM c.label AS changed
              FROM {store.PREDICTIONS} n
              JOIN {store.PREDICTIONS} c
                ON c.{store.PARTITION_KEY} = %(champion)s AND c.entity_id = n.entity_id
             WHERE n.{store.PARTITION_KEY} = %(version)s AND n.run_id = %(run)s
        ), summary AS (
            SELECT count(*) AS compared, avg(abs(diff)) AS mean_abs, avg(diff) AS mean_diff,
                   max(abs(diff)) AS max_abs, avg(changed::int) AS changed_share,
                   greatest(max(abs(diff)), 1e-12) AS bound
              FROM pairs
        )
        SELECT s.*,
               ARRAY(SELECT coalesce(h.rows, 0)
                       FROM generate_series(1, %(bins)s) AS b(bin)
                       LEFT JOIN (SELECT least(width_bucket(diff, -s.bound, s.bound, %(bins)s),
                                               %(bins)s) AS bin, count(*) AS rows
                                    FROM pairs GROUP BY 1) h USING (bin)
                      ORDER BY bin) AS histogram
          FROM summary s
        """,
        {
            "champion": champion_id,
            "version": run["model_version_id"],
            "run": run["run_id"],
            "bins": DIFFERENCE_BINS,
        },
    )
    figures["champion_version"] = champion_version
    return None, figures


def _records(db: Database, sql: str, params: Any) -> list[dict[str, Any]]:
    """The rows of one statement as dicts by column name, read as the writer."""
    with db.transaction("writer") as cursor:
        cursor.execute(sql, params)
        names = [column.name for column in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
