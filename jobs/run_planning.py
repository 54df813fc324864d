"""The scoring run a DAG run stands for: which model version, which batch (the oldest landed
folder not ingested yet, on a schedule), which run id, resolved once by the plan task so
ingest, score, publish and the check all record on one run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deltalake import DeltaTable

from jobs.ingest import ingest_txn
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

    def ingest_args(self) -> list[str]:
        return [
            str(self.input_path),
            "--batch-id",
            str(self.batch_id),
            "--dataset",
            self.dataset,
            "--run-id",
            self.run_id,
            "--max-rejected-share",
            str(self.max_rejected_share),
        ]

    def score_args(self) -> list[str]:
        args = ["--model", self.model, "--version", str(self.version), "--mode", self.mode]
        if self.batch_id is not None:
            args += ["--batch-id", self.batch_id]
        return [*args, "--run-id", self.run_id, "--device", self.device]

    def publish_args(self) -> list[str]:
        return ["--run-id", self.run_id]


def plan_score(settings: Settings, params: Mapping[str, Any], stamp: str) -> ScorePlan | None:
    """The run the Params ask for; None when a scheduled run finds nothing to do.

    `stamp` tells full rescores and requests runs apart (the DAG run's start time). With no input
    path, the oldest batch folder under the landing root that no run has ingested yet is taken;
    with none, the champion answers the model's pending score requests, if there are any.
    """
    db = database.Database.from_settings(settings)
    registry = Registry(db)
    model = params["model"]
    if params.get("version") is not None:
        version = registry.resolve(model, version=int(params["version"]))
    else:
        version = registry.resolve(model, alias=params.get("alias") or CHAMPION)
    common = {
        "model": model,
        "version": version.version,
        "dataset": version.input_schema["dataset"],
        "device": params.get("device") or settings.scoring_device,
        "max_rejected_share": _share(params, settings),
    }
    if params.get("mode") == "full":
        run_id = names.run_id("full", model, version.version, stamp=stamp)
        return ScorePlan(run_id=run_id, mode="full", **common)
    input_path = params.get("input_path") or None
    batch_id = params.get("batch_id") or None
    if input_path is None:
        landed = next_landed_batch(settings, version.input_schema["dataset"])
        if landed is None:
            if CHAMPION not in version.aliases or not pending_requests(db, model):
                return None
            run_id = names.run_id("requests", model, version.version, stamp=stamp)
            return ScorePlan(run_id=run_id, mode="requests", **common)
        batch_id, input_path = landed
    elif batch_id is None:
        batch_id = Path(input_path.rstrip("/")).name
    run_id = names.run_id("incremental", model, version.version, batch_id)
    return ScorePlan(
        run_id=run_id, mode="incremental", batch_id=batch_id, input_path=input_path, **common
    )


def _share(params: Mapping[str, Any], settings: Settings) -> float:
    value = params.get("max_rejected_share")
    return settings.max_rejected_share if value is None else float(value)


def next_landed_batch(settings: Settings, dataset: str) -> tuple[str, str] | None:
    """The oldest folder under the landing root whose batch is not in the dataset's incoming
    table yet: (id, path). "Ingested" is the lake's own record, ingest's Delta transaction, not
    run records: an ingest that failed after recording its counts is picked up again."""
    root = Path(settings.landing_root)
    if not root.is_dir():
        return None
    folders = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))),
        key=lambda p: (p.stat().st_mtime, p.name),
    )
    uri = f"{settings.lake_uri}/{incoming_table(dataset)}"
    table = DeltaTable(uri) if folders and DeltaTable.is_deltatable(uri) else None
    for folder in folders:
        app_id = ingest_txn(dataset, folder.name).app_id
        if table is None or table.transaction_version(app_id) is None:
            return folder.name, str(folder)
    return None


def pending_requests(db: database.Database, model: str) -> int:
    """The model's asynchronous score requests waiting for a run."""
    rows = db.fetch(
        "writer",
        "SELECT count(*) FROM precompute.score_requests r JOIN precompute.models m "
        f"USING (model_id) WHERE m.name = %s AND {CLAIMABLE}",
        (model,),
    )
    return int(rows[0][0])
