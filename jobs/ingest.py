"""Ingest one batch: validate it against its contract, append the valid rows to the dataset's
`incoming` Delta table and every rejected row, with its reasons, to `quarantine`.

Run with `precompute ingest` or `spark-submit jobs/ingest.py`. A batch that cannot be read,
or lacks a contract column, fails before anything is written. Rerunning a batch that was
ingested changes nothing. When more rows are rejected than the limit allows, the quarantine is
written (so the reasons can be read) and the run fails without appending the valid rows; a rerun
with a higher limit appends them.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jobs import validation
from jobs.lake import Txn, lake
from jobs.run_records import IngestCounts, RunRecorder
from jobs.run_report import write_report
from jobs.spark import spark_session
from precompute.commands import job_main
from precompute.contracts import Contract, load_contract
from precompute.database import Database
from precompute.errors import PrecomputeError
from precompute.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import Column as SparkColumn
    from pyspark.sql import DataFrame, SparkSession

    from jobs.batch_files import Format
    from jobs.lake import CommitResult, Lake, Target


class RejectedShareExceeded(PrecomputeError):
    """Too many rows were rejected: the quarantine was written, incoming was not."""


@dataclass(frozen=True)
class IngestRequest:
    input_path: str
    batch_id: str
    dataset: str
    contract_version: int | None = None
    run_id: str | None = None
    max_rejected_share: float | None = None
    format: Format | None = None


@dataclass(frozen=True)
class IngestResult:
    batch_id: str
    run_id: str
    counts: IngestCounts | None
    incoming_version: int | None
    quarantine_version: int | None
    already_ingested: bool

    def summary(self) -> str:
        counts = self.counts
        figures = (
            f"{counts.read} rows read, {counts.accepted} accepted, {counts.quarantined} quarantined"
            if counts
            else "counts unknown (not in the run records)"
        )
        prefix = "already ingested, nothing to do" if self.already_ingested else "ingested"
        return (
            f"batch {self.batch_id}: {prefix}: {figures} "
            f"(incoming v{self.incoming_version}, quarantine v{self.quarantine_version})"
        )


def ingest_txn(dataset: str, batch_id: str) -> Txn:
    """The Delta transaction that appends one batch to its incoming table."""
    return Txn(f"precompute.ingest:{dataset}:{batch_id}")


def ingest(spark: SparkSession, settings: Settings, request: IngestRequest) -> IngestResult:
    """Validate and append one batch; see the module docstring for what happens when."""
    contract = load_contract(settings.contracts_dir, request.dataset, request.contract_version)
    run_id = request.run_id or f"ingest-{request.batch_id}"
    limit = (
        settings.max_rejected_share
        if request.max_rejected_share is None
        else request.max_rejected_share
    )
    recorder = RunRecorder(
        Database.from_settings(settings),
        run_id,
        "incremental",
        request.batch_id,
        lease_seconds=settings.stage_lease_seconds,
    )
    recorder.start_stage("ingest")  # also proves the database is there before any work
    try:
        result = _ingest(spark, settings, request, contract, run_id, limit, recorder)
    except Exception as exc:
        recorder.finish_stage("ingest", "failed", error=str(exc))
        write_report(settings, recorder.db, recorder.run_id)  # shows where it stopped
        raise
    counts = result.counts
    recorder.finish_stage(
        "ingest",
        "skipped" if result.already_ingested else "succeeded",
        rows_in=counts.read if counts else None,
        rows_out=counts.accepted if counts else None,
        rows_rejected=counts.quarantined if counts else None,
    )
    return result


def _ingest(
    spark: SparkSession,
    settings: Settings,
    request: IngestRequest,
    contract: Contract,
    run_id: str,
    limit: float,
    recorder: RunRecorder,
) -> IngestResult:
    # Imported here, not at the top: `precompute` builds its parser from this module, and
    # these pull in pyarrow, which every other command would pay for at start-up.
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    from jobs.batch_catalogue import record_batch
    from jobs.batch_files import batch_files, detect_format, read_errors
    from jobs.batch_reader import read_batch
    from jobs.profile_store import newest_training_figures, store_batch_profile
    from jobs.profiles import batch_profile, outside_aggregates, profile_aggregates

    engine = lake(spark, settings)
    ingested_at = datetime.datetime.now(datetime.UTC)
    targets = validation.targets(contract, request.batch_id, ingested_at)
    incoming = targets[validation.INCOMING].table
    quarantine = targets[validation.QUARANTINE].table
    txn = ingest_txn(contract.name, request.batch_id)

    if (engine.committed_version(incoming, txn.app_id) or 0) >= txn.version:
        counts = recorder.earlier_ingest()
        if counts is not None:
            recorder.record_ingest(counts)
        return IngestResult(
            request.batch_id,
            run_id,
            counts,
            engine.version(incoming),
            engine.version(quarantine) if engine.exists(quarantine) else None,
            already_ingested=True,
        )

    files = batch_files(request.input_path)
    fmt = request.format or detect_format(files)
    raw = read_batch(spark, files, fmt, contract)
    profiling = settings.profile_batches
    with read_errors(files):
        validated = validation.validate(raw, contract)  # its duplicate check reads the batch
        outside = outside_aggregates(spark, contract) if profiling else []
        counts, q, figures = _quarantine(
            engine, validated, targets, txn, metadata(run_id, request.batch_id), outside
        )
    recorder.record_ingest(counts)
    record_batch(
        recorder.db,
        dataset=contract.name,
        contract_version=contract.version,
        batch_id=request.batch_id,
        run_id=run_id,
        input_path=request.input_path,
        fmt=fmt,
        files=files,
        ingested_at=ingested_at,
    )
    share = counts.quarantined / counts.read if counts.read else 0.0
    if share > limit:
        raise RejectedShareExceeded(
            f"batch {request.batch_id}: {counts.quarantined} of {counts.read} rows rejected "
            f"({share:.1%}, above the limit of {limit:.1%}). The quarantine table "
            f"(version {q.version}) holds them with their reasons; nothing was appended "
            "to incoming. Fix the input, or rerun with a higher --max-rejected-share to "
            "append the valid rows."
        )
    accepted = validated.where(validated[validation.ROUTE] == validation.INCOMING)
    # The profile of the accepted rows is observed as they are written: no pass of its own.
    # Observed even without the profile: an observation ends a generated-code stage, and
    # without one Spark fuses the validation into the write's stage, whose per-run literals
    # (ingested_at) it writes into the code, so a warm session (the warm Spark driver)
    # compiled that huge method again for every batch: measured 10-17 s of JIT CPU per
    # 1M-row ingest, against 4-6 s with it and 1.3x the wall-clock time.
    profiled = Observation(f"profile-{txn.app_id}")
    training = newest_training_figures(recorder.db, contract.name) if profiling else None
    observed = (
        profile_aggregates(
            spark,
            contract,
            training.edges,
            training.means,
            counts.accepted,
            zlib.crc32(txn.app_id.encode()),
        )
        if training is not None
        else [F.count(F.lit(1)).alias("_p_rows")]
    )
    accepted = accepted.observe(profiled, *observed)
    with read_errors(files):
        i = engine.append(
            accepted, targets[validation.INCOMING], txn, metadata(run_id, request.batch_id)
        )
    if training is not None:
        figured = {**figures, **profiled.get}
        profile = batch_profile(contract, figured, training.edges, training.means)
        store_batch_profile(
            recorder.db, contract.name, contract.version, request.batch_id, run_id, profile
        )
    return IngestResult(request.batch_id, run_id, counts, i.version, q.version, False)


def _quarantine(
    engine: Lake,
    validated: DataFrame,
    targets: dict[str, Target],
    txn: Txn,
    metadata: dict[str, str],
    profile: list[SparkColumn],
) -> tuple[IngestCounts, CommitResult, dict[str, Any]]:
    """Append the rejected rows to the quarantine, counting every row on the way; with the
    counts, the figures of the `profile` aggregates (`jobs.profiles`).

    The quarantine is written first, by a pass that also counts every row, the quarantined
    rows' reason codes and profiles the accepted ones (an observation, not a second job), so
    the rejected share is known before incoming is touched. Incoming is a
    second pass: caching the validated rows instead measured slower than reading again.
    """
    # pyspark is heavy: `precompute` builds its parser from this module.
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    route = validated[validation.ROUTE]
    seen = Observation(f"ingest-{txn.app_id}")
    counted = [
        F.count(F.lit(1)).alias("read"),
        F.count(F.when(route == validation.QUARANTINE, 1)).alias("quarantined"),
        # Per reason code, in the same pass: only quarantined rows carry reasons.
        *validation.reason_counts(),
        *profile,
    ]
    q = engine.append(
        validated.observe(seen, *counted).where(route == validation.QUARANTINE),
        targets[validation.QUARANTINE],
        txn,
        metadata,
    )
    # On a rerun after too many rejects the quarantine is in already: count without writing.
    figures = (
        seen.get if q.committed else validated.agg(*counted).first().asDict()  # type: ignore[union-attr]
    )
    read, quarantined = int(figures["read"]), int(figures["quarantined"])
    reasons = {code: int(figures[code]) for code in validation.REASON_CODES if figures[code]}
    return IngestCounts(read, read - quarantined, quarantined, reasons), q, figures


def metadata(run_id: str, batch_id: str) -> dict[str, str]:
    """What each ingest commit says about itself in the table's history."""
    return {"precompute.batch_id": batch_id, "precompute.run_id": run_id}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="a batch file or folder (CSV, JSON lines or Parquet)")
    parser.add_argument("--batch-id", required=True, help="the batch's id; reruns reuse it")
    parser.add_argument("--dataset", required=True, help="contract name, e.g. customers")
    parser.add_argument("--contract-version", type=int, help="default: the newest")
    parser.add_argument("--run-id", help="run to record counts on (default: ingest-BATCH)")
    parser.add_argument(
        "--max-rejected-share",
        type=float,
        help="fail when a larger share of rows is rejected (default: the setting)",
    )
    parser.add_argument(
        "--format", choices=["csv", "json", "parquet"], help="default: by extension"
    )


def request_from(args: argparse.Namespace) -> IngestRequest:
    return IngestRequest(
        input_path=args.input,
        batch_id=args.batch_id,
        dataset=args.dataset,
        contract_version=args.contract_version,
        run_id=args.run_id,
        max_rejected_share=args.max_rejected_share,
        format=args.format,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """spark-submit entry point: same arguments as `precompute ingest`."""
    return job_main("ingest", __doc__, add_arguments, run, argv)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Start Spark and ingest the batch the arguments name."""
    spark = spark_session(settings, "precompute-ingest")
    print(ingest(spark, settings, request_from(args)).summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
