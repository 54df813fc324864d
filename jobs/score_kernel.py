"""The executor side of scoring: each Python worker compiles the bundle once and scores the
Arrow batches Spark hands it (`mapInArrow`), one prediction out per row in.

This module loads the bundle runtime (numpy, pyarrow, the tree libraries): the score stage
imports it only when a run scores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from jobs.bundle.format import read_bundle
from jobs.bundle.program import build_program
from jobs.bundle.runtime import compile_bundle
from precompute.names import Device

Batches = Iterator[pa.RecordBatch]

_PLANS: dict[tuple[str, int, str], Any] = {}  # per Python worker: compiled once, reused by tasks


def batch_scorer(
    content: bytes, sha256: str, model_version_id: int, device: Device, entity: str
) -> Callable[[Batches], Batches]:
    """The function Spark runs on each partition. The bundle's program is built here first,
    so what the executors could not run is refused on the driver, before any work."""
    build_program(read_bundle(content))
    return partial(score_batches, content, sha256, model_version_id, device, entity)


def score_batches(
    content: bytes,
    sha256: str,
    model_version_id: int,
    device: Device,
    entity: str,
    batches: Batches,
) -> Batches:
    """Compile the bundle once per worker, score each Arrow batch."""
    key = (sha256, model_version_id, device)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _PLANS[key] = compile_bundle(
            read_bundle(content), device, model_version_id=model_version_id, entity_id=entity
        )
    for batch in batches:
        if batch.num_rows == 0:
            continue
        out = plan.score(batch)
        if out.num_rows != batch.num_rows:  # the count check before the write relies on it
            raise AssertionError(f"scored {out.num_rows} rows of a batch of {batch.num_rows}")
        yield pa.RecordBatch.from_arrays(
            [
                pc.cast(out.column(0), pa.string()),
                out.column("score"),
                out.column("label"),
                out.column("probabilities"),
            ],
            names=["entity_id", "score", "label", "probabilities"],
        )
