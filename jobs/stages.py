"""The stages of one or more planned scoring runs, in one Spark session: ingest (incremental
runs), score and publish, run after run in the order planned.

What the scoring DAGs run (`spark-submit jobs/stages.py --plans JSON`, or through the warm
driver, `jobs/warm_driver.py`). One session for all stages saves a JVM start and its warm-up per
stage, most of a small run's time. Nothing of the per-stage records is lost: each stage records
its attempt in `run_stages` as before, and a stage that already succeeded for a run changes
nothing when rerun, so a retried task resumes at the stage that failed.

Batches are scored in landing order, each once. A run that fails does not stop the runs planned
after it; the job fails once all have run.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from jobs.ingest import IngestRequest, ingest
from jobs.progress import progress
from jobs.publish import publish
from jobs.run_planning import ScorePlan, parse_plans
from jobs.score import ScoreRequest, score
from jobs.spark import spark_session
from precompute.commands import job_main
from precompute.database import Database
from precompute.errors import PrecomputeError
from precompute.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def run_plans(
    spark: SparkSession, settings: Settings, db: Database, plans: Sequence[ScorePlan]
) -> None:
    """Each plan's stages in order. A run that fails does not stop the others (one bad batch
    must not hold up the rest); the job fails at the end, naming the runs that failed."""
    failed = []
    for n, plan in enumerate(plans, 1):
        batch = f", batch {plan.batch_id}" if plan.batch_id else ""
        print(
            f"run {plan.run_id} ({n} of {len(plans)}): {plan.mode} with {plan.model} "
            f"v{plan.version}{batch}",
            flush=True,
        )
        try:
            _run_stages(spark, settings, db, plan)
        except Exception as exc:  # each stage recorded its failure; the next run goes on
            print(f"error: run {plan.run_id} failed: {_first_line(exc)}", flush=True)
            failed.append(plan.run_id)
    if failed:
        raise RunsFailed(f"{len(failed)} of {len(plans)} runs failed: {', '.join(failed)}")


class RunsFailed(PrecomputeError):
    """Some planned runs failed; each said why in the log and in its run record."""


def _run_stages(spark: SparkSession, settings: Settings, db: Database, plan: ScorePlan) -> None:
    if plan.mode == "incremental":
        with _stage(spark, plan, "ingest") as done:
            done(ingest(spark, settings, _ingest_request(plan)).summary())
    with _stage(spark, plan, "score") as done:
        done(score(spark, settings, db, _score_request(plan)).summary())
    with _stage(spark, plan, "publish") as done:
        done(publish(spark, settings, db, plan.run_id).summary())


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


@contextmanager
def _stage(spark: SparkSession, plan: ScorePlan, stage: str) -> Iterator[Callable[[str], None]]:
    """A stage's progress while it runs, then its summary and seconds."""
    started = time.monotonic()

    def done(summary: str) -> None:
        print(f"  {stage} ({time.monotonic() - started:.1f} s): {summary}", flush=True)

    with progress(spark, f"{plan.run_id}: {stage}"):
        yield done


def _ingest_request(plan: ScorePlan) -> IngestRequest:
    assert plan.input_path is not None and plan.batch_id is not None  # incremental plans have both
    return IngestRequest(
        input_path=plan.input_path,
        batch_id=plan.batch_id,
        dataset=plan.dataset,
        run_id=plan.run_id,
        max_rejected_share=plan.max_rejected_share,
    )


def _score_request(plan: ScorePlan) -> ScoreRequest:
    return ScoreRequest(
        model=plan.model,
        version=plan.version,
        mode=plan.mode,  # type: ignore[arg-type]
        batch_id=plan.batch_id,
        run_id=plan.run_id,
        device=plan.device,  # type: ignore[arg-type]
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plans",
        required=True,
        type=parse_plans,
        help="the planned runs, as the DAG's plan task wrote them (JSON)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """spark-submit entry point."""
    return job_main("stages", __doc__, add_arguments, run, argv)


def run(args: argparse.Namespace, settings: Settings) -> int:
    plans = args.plans
    spark = spark_session(settings, "precompute-stages")
    run_plans(spark, settings, Database.from_settings(settings), plans)
    return 0


if __name__ == "__main__":
    sys.exit(main())
