"""The scoring runs a DAG run stands for: which model version, which batches (every landed
folder not ingested yet, oldest first, when no path is given), which run ids, resolved once by
the plan task so the stages and the check record on the same runs."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deltalake import DeltaTable

from jobs.ingest import ingest_txn
from jobs.landing import ready_folders
from jobs.registry import Registry
from jobs.score_requests import CLAIMABLE
from jobs.validation import incoming_table
from precompute import database, names
from precompute.names import CHAMPION
from precompute.settings import Settings


@dataclass(frozen=True)
class ScorePlan:
    """One scoring run as the DAG will carry it out; passed between tasks as a dict."""

    run_id: str
    mode: str
    model: str
    version: int
    dataset: str
    device: str
    max_rejected_share: float
    batch_id: str | None = None
    input_path: str | None = None


def stages_args(plans: list[ScorePlan]) -> list[str]:
    """The arguments of `jobs/stages.py` for the planned runs."""
    return ["--plans", json.dumps([dataclasses.asdict(p) for p in plans])]


def parse_plans(text: str) -> list[ScorePlan]:
    """`--plans` read back; what is wrong with it becomes argparse's one-line usage error."""
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise argparse.ArgumentTypeError("not a JSON list of planned runs (objects)")
    fields = dataclasses.fields(ScorePlan)
    for number, item in enumerate(items, 1):
        problems = []
        if unknown := sorted(set(item) - {f.name for f in fields}):
            problems.append(f"unknown fields {', '.join(unknown)}")
        required = [f.name for f in fields if f.default is dataclasses.MISSING]
        if missing := [name for name in required if name not in item]:
            problems.append(f"missing fields {', '.join(missing)}")
        if problems:
            raise argparse.ArgumentTypeError(f"planned run {number}: {'; '.join(problems)}")
    return [ScorePlan(**item) for item in items]


def plan_runs(settings: Settings, params: Mapping[str, Any], stamp: str) -> list[ScorePlan]:
    """The runs the Params ask for, in the order they must run; empty when there is nothing to
    do.

    `stamp` tells full rescores and requests runs apart (the DAG run's start time). With no input
    path, every ready batch folder under the landing root that no run has ingested yet is
    planned, oldest first, except those whose ingest failed; with none, the champion answers the
    model's pending score requests, if there are any.
    """
    db = database.Database.from_settings(settings)
    registry = Registry(db)
    model = params["model"]
    if params.get("version") is not None:
        version = registry.resolve(model, version=int(params["version"]))
    else:
        version = registry.resolve(model, alias=params.get("alias") or CHAMPION)
    dataset = version.input_schema["dataset"]
    common = {
        "model": model,
        "version": version.version,
        "dataset": dataset,
        "device": params.get("device") or settings.scoring_device,
        "max_rejected_share": _share(params, settings),
    }
    if params.get("mode") == "full":
        run_id = names.run_id("full", model, version.version, stamp=stamp)
        return [ScorePlan(run_id=run_id, mode="full", **common)]
    input_path = params.get("input_path") or None
    if input_path is not None:
        batch_id = params.get("batch_id") or Path(input_path.rstrip("/")).name
        batches = [(batch_id, input_path)]
    else:
        batches = landed_batches(settings, dataset, db)
    if not batches:
        if CHAMPION not in version.aliases or not pending_requests(db, model):
            return []
        run_id = names.run_id("requests", model, version.version, stamp=stamp)
        return [ScorePlan(run_id=run_id, mode="requests", **common)]
    return [
        ScorePlan(
            run_id=names.run_id("incremental", model, version.version, batch_id),
            mode="incremental",
            batch_id=batch_id,
            input_path=path,
            **common,
        )
        for batch_id, path in batches
    ]


def _share(params: Mapping[str, Any], settings: Settings) -> float:
    value = params.get("max_rejected_share")
    return settings.max_rejected_share if value is None else float(value)


def landed_batches(
    settings: Settings, dataset: str, db: database.Database
) -> list[tuple[str, str]]:
    """The ready folders under the landing root (see `jobs.landing`) whose batch is not in the
    dataset's incoming table yet, oldest first: (id, path). "Ingested" is the lake's own record,
    ingest's Delta transaction, not run records.

    A batch whose ingest failed (unreadable, too many rows rejected) is set aside, not planned
    again: it would fail every run and hold up the batches behind it. Its failed run and report
    say why; once it is fixed, score it by triggering `score_batch` with its `input_path`."""
    folders = ready_folders(Path(settings.landing_root), settings.landing_require_marker)
    uri = f"{settings.lake_uri}/{incoming_table(dataset)}"
    table = DeltaTable(uri) if folders and DeltaTable.is_deltatable(uri) else None
    pending = [
        folder
        for folder in folders
        if table is None
        or table.transaction_version(ingest_txn(dataset, folder.name).app_id) is None
    ]
    aside = set_aside(db, [f.name for f in pending]) if pending else set()
    return [(f.name, str(f)) for f in pending if f.name not in aside]


def set_aside(db: database.Database, batch_ids: list[str]) -> set[str]:
    """Of these batches, those whose latest ingest attempt failed."""
    rows = db.fetch(
        "writer",
        """
        SELECT r.batch_id FROM precompute.runs r JOIN precompute.run_stages s USING (run_id)
         WHERE r.batch_id = ANY(%s) AND s.stage = 'ingest' AND s.state = 'failed'
           AND s.attempt = (SELECT max(a.attempt) FROM precompute.run_stages a
                             WHERE a.run_id = s.run_id AND a.stage = 'ingest')
        """,
        (batch_ids,),
    )
    return {str(batch_id) for (batch_id,) in rows}


def pending_requests(db: database.Database, model: str) -> int:
    """The model's asynchronous score requests waiting for a run."""
    rows = db.fetch(
        "writer",
        "SELECT count(*) FROM precompute.score_requests r JOIN precompute.models m "
        f"USING (model_id) WHERE m.name = %s AND {CLAIMABLE}",
        (model,),
    )
    return int(rows[0][0])
