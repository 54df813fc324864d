"""Progress of a long stage in its log: Spark tasks done of those known, and an estimate.

A stage's jobs are tagged with a job group; a daemon thread reads Spark's status tracker (no
listener, no JVM code of ours) every few seconds and prints a line while the stage runs. Short
stages, and stages before their first Spark job, print nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

EVERY_SECONDS = 10.0


@contextmanager
def progress(spark: SparkSession, label: str, every: float = EVERY_SECONDS) -> Iterator[None]:
    """Print `label`'s progress every `every` seconds until the block ends."""
    sc = spark.sparkContext
    group = f"precompute {label}"
    # Jobs started by this thread carry the group (pyspark pins Python threads to JVM threads).
    sc.setJobGroup(group, label)
    done = threading.Event()
    watcher = threading.Thread(
        target=_watch, args=(spark, group, label, every, done), daemon=True, name="progress"
    )
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join(timeout=every)
        sc.setLocalProperty("spark.jobGroup.id", None)  # type: ignore[arg-type]
        sc.setLocalProperty("spark.job.description", None)  # type: ignore[arg-type]


def _watch(
    spark: SparkSession, group: str, label: str, every: float, done: threading.Event
) -> None:
    started = time.monotonic()
    first_seen: dict[int, float] = {}
    while not done.wait(every):
        try:
            line = _line(spark, group, started, first_seen)
        except Exception as exc:  # the session may be stopping; progress is never worth a failure
            line = f"progress unavailable ({type(exc).__name__})"
        if line and not done.is_set():  # the stage may have ended while it was made
            print(f"  {label}: {line}", flush=True)


def _line(
    spark: SparkSession, group: str, started: float, first_seen: dict[int, float]
) -> str | None:
    """The progress line; None before the stage has started Spark work."""
    tracker = spark.sparkContext.statusTracker()
    now = time.monotonic()
    jobs = tracker.getJobIdsForGroup(group)
    total = finished = 0
    left: list[float] = []
    for job in jobs:
        info = tracker.getJobInfo(job)
        for stage_id in info.stageIds if info else ():
            stage = tracker.getStageInfo(stage_id)
            if stage is None:
                continue
            total += stage.numTasks
            finished += stage.numCompletedTasks
            if stage.numActiveTasks and stage.numCompletedTasks < stage.numTasks:
                seen = first_seen.setdefault(stage_id, now)
                if stage.numCompletedTasks:
                    per_task = (now - seen) / stage.numCompletedTasks
                    left.append(per_task * (stage.numTasks - stage.numCompletedTasks))
    if not total:
        return None
    estimate = f", about {max(left):.0f} s left in the running Spark stage" if left else ""
    return (
        f"{now - started:.0f} s: {finished} of {total} tasks done in {len(jobs)} Spark "
        f"job(s){estimate}"
    )
