"""The check a published scoring run must pass: its counts add up, and its rejected share,
score drift (PSI against the model's training reference) and feature drift (each feature's
batch profile against its training profile, `jobs.drift_check`) are within their limits. Pass
or fail, it stores the run's report (`jobs.run_report`) and ends its log with the report's
address."""

from __future__ import annotations

from jobs import drift_check
from jobs.run_records import RunRecorder
from jobs.run_report import write_report
from precompute import database
from precompute.errors import PrecomputeError
from precompute.settings import Settings

# PSI over the 20 score bins, from n rows of an unchanged distribution, is about 19/n from
# sampling alone (a chi-square over n): below this many rows, drift is noise, not checked.
MIN_DRIFT_ROWS = 1000


class RunCheckFailed(PrecomputeError):
    """A run's counts or drift are beyond the limits."""


def check_run(settings: Settings, run_id: str, max_rejected_share: float, max_psi: float) -> str:
    """Fail (and mark the run failed) when its counts do not add up or pass the limits."""
    db = database.Database.from_settings(settings)
    rows = db.fetch(
        "writer",
        """
        SELECT r.mode, r.batch_id, r.state, r.rows_read, r.rows_accepted, r.rows_quarantined,
               r.rows_scored, r.rows_published, r.rows_requested, r.rows_unpublished,
               CASE WHEN r.rows_read > 0 THEN r.rows_quarantined::float8 / r.rows_read END,
               (SELECT m.value FROM precompute.run_metrics m
                 WHERE m.run_id = r.run_id AND m.name = 'psi')
          FROM precompute.runs r WHERE r.run_id = %s
        """,
        (run_id,),
    )
    if not rows:
        raise RunCheckFailed(f"run {run_id} was never recorded: did its stages run?")
    (
        mode,
        batch,
        state,
        read,
        accepted,
        quarantined,
        scored,
        published,
        requested,
        unpublished,
        share,
        psi,
    ) = rows[0]
    problems = []
    if state != "succeeded":
        problems.append(f"the run is {state}, not succeeded")
    if (published or 0) + unpublished != scored:
        problems.append(
            f"{published} rows published and {unpublished} left out but {scored} scored"
        )
    if mode == "incremental" and scored != (accepted or 0) + (requested or 0):
        problems.append(f"{scored} rows scored but {accepted} accepted and {requested} requested")
    if mode == "requests" and scored != requested:
        problems.append(f"{scored} rows scored but {requested} requests claimed")
    if share is not None and share > max_rejected_share:
        problems.append(
            f"{share:.2%} of the batch was rejected ({quarantined} of {read} rows), over the "
            f"limit of {max_rejected_share:.2%}: see the quarantine table for the reasons"
        )
    drift_checked = psi is not None and (scored or 0) >= MIN_DRIFT_ROWS
    if drift_checked and psi > max_psi:
        problems.append(
            f"score drift PSI {psi:.4f} is over the limit {max_psi} (PRECOMPUTE_MAX_PSI): "
            "the scores no longer look like the model's training reference"
        )
    features = drift_check.measure_run(settings, db, run_id, MIN_DRIFT_ROWS)
    failed = [drift_check.describe(d) for d in features or [] if d.level == "fail"]
    warned = [drift_check.describe(d) for d in features or [] if d.level == "warn"]
    if failed:
        problems.append(
            "feature drift against the model's training data over the fail threshold: "
            + ", ".join(failed)
        )
    if warned:
        print(f"run {run_id}: warning: feature drift over the warn threshold: {', '.join(warned)}")
    recorder = RunRecorder(db, run_id, mode, batch, lease_seconds=settings.stage_lease_seconds)
    if problems:
        message = f"run {run_id}: " + "; ".join(problems)
        recorder.record_check(passed=False, error=message)
        write_report(settings, db, run_id)
        raise RunCheckFailed(message)
    recorder.record_check(passed=True)
    write_report(settings, db, run_id)
    drift = (
        f", PSI {psi:.4f}"
        if drift_checked
        else f", drift not checked ({scored} rows; it needs {MIN_DRIFT_ROWS})"
    )
    if features is not None:
        drift += f", {len(features)} features within their drift limits"
        drift += f" ({len(warned)} warned)" if warned else ""
    return f"run {run_id}: {published} predictions published, counts add up{drift}"


def check_runs(settings: Settings, run_ids: list[str], max_rejected_share: float) -> str:
    """Check each of a DAG run's scoring runs; fail naming every one that does not pass."""
    passed, failed = [], []
    for run_id in run_ids:
        try:
            passed.append(check_run(settings, run_id, max_rejected_share, settings.max_psi))
        except RunCheckFailed as exc:
            failed.append(str(exc))
    for line in passed:
        print(line)
    if failed:
        raise RunCheckFailed("; ".join(failed))
    return "\n".join(passed)
