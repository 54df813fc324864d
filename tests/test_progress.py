"""A long stage's progress lines, on a real local Spark session."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from jobs.progress import progress


def test_a_long_stage_prints_tasks_done_and_an_estimate(
    spark: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    def slow(batches: Iterator[Any]) -> Iterator[Any]:  # shipped to the workers by value
        for batch in batches:
            time.sleep(0.3)  # a task that takes a while, so several lines are printed
            yield batch

    rows = spark.range(0, 16_000, numPartitions=16)
    with progress(spark, "run-x: score", every=0.5):
        assert rows.mapInArrow(slow, rows.schema).count() == 16_000
    lines = [line for line in capsys.readouterr().out.splitlines() if "run-x: score" in line]
    assert len(lines) >= 2, lines
    done = [
        re.fullmatch(r"  run-x: score: \d+ s: (\d+) of (\d+) tasks done in \d+ Spark job\(s\).*", x)
        for x in lines
    ]
    assert all(done), lines
    finished = [int(m.group(1)) for m in done if m]
    assert finished == sorted(finished) and all(int(m.group(2)) >= 16 for m in done if m), lines
    assert any("s left in the running Spark stage" in line for line in lines), lines
    # Nothing is printed once the stage ended, and later jobs are not counted as its own.
    rows.count()
    time.sleep(1.2)
    assert "run-x" not in capsys.readouterr().out
