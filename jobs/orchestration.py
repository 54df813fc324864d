"""What the Airflow DAGs need from the project, so the DAG files hold wiring only.

- the Spark connection and the environment Airflow runs the jobs in, both from the settings;
- `plan_score`: the scoring run a DAG run stands for (which batch, which model version, which
  run id), resolved once so ingest, score, publish and the check all record on one run;
- `check_run`: the counts and drift a published run must pass.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.spark import LOCAL_MASTER, spark_conf
from precompute import database, names
from precompute.errors import PrecomputeError
from precompute.names import CHALLENGER, CHAMPION
from precompute.settings import Settings, project_root

if TYPE_CHECKING:
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

SPARK_CONN_ID = "spark_default"
# PSI over the 20 score bins, from n rows of an unchanged distribution, is about 19/n from
# sampling alone (a chi-square over n): below this many rows, drift is noise, not checked.
MIN_DRIFT_ROWS = 1000


class RunCheckFailed(PrecomputeError):
    """A run's counts or drift are beyond the limits."""


def job_application(name: str) -> str:
    """The file spark-submit runs for a job: `jobs/<name>.py` of this checkout."""
    return str(project_root() / "jobs" / f"{name}.py")


def spark_job(
    job: str, arguments_from: str | None = None, *, task_id: str | None = None, **kwargs: Any
) -> SparkSubmitOperator:
    """A task (named `job` unless `task_id` says) that spark-submits `jobs/<job>.py` against
    the `spark_default` connection, with the argument list another task returned
    (`arguments_from`: "task.key")."""
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    arguments = None
    if arguments_from is not None:
        task, _, key = arguments_from.partition(".")
        pulled = f"ti.xcom_pull(task_ids='{task}')" + (f"['{key}']" if key else "")
        # A template that renders to the list itself: the DAGs render native objects.
        arguments = "{{ " + pulled + " }}"
    return SparkSubmitOperator(
        task_id=task_id or job,
        application=job_application(job),
        application_args=arguments,  # type: ignore[arg-type]
        conn_id=SPARK_CONN_ID,
        name=f"precompute-{job}",
        conf=submit_conf(Settings()),
        **kwargs,
    )


def submit_conf(settings: Settings) -> dict[str, str]:
    """The session settings spark-submit must start the driver with: the JARs on its
    classpath, its memory and JVM options cannot be changed once the JVM runs. The master
    comes from the connection."""
    conf = spark_conf(settings, "precompute", settings.spark_master or LOCAL_MASTER)
    return {k: v for k, v in conf.items() if k not in ("spark.master", "spark.app.name")}


def spark_connection(settings: Settings) -> str:
    """AIRFLOW_CONN_SPARK_DEFAULT for the settings' Spark master.

    The whole master URL goes in `host`: the provider builds `--master` as host[:port], and a
    `spark://local[2]` URI would silently fall back to YARN.
    """
    return json.dumps({"conn_type": "spark", "host": settings.spark_master or "local[*]"})


def airflow_environment(settings: Settings) -> dict[str, str]:
    """Variables for every Airflow process this project starts (standalone, `dag.test`)."""
    venv_bin = str(Path(sys.executable).parent)
    return {
        "AIRFLOW_HOME": str(settings.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(project_root() / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",  # 2 cores: Spark jobs, PostgreSQL and Airflow share them
        f"AIRFLOW_CONN_{SPARK_CONN_ID.upper()}": spark_connection(settings),
        # spark-submit is found on the PATH; this venv's is the one that has the project.
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        "PYSPARK_PYTHON": sys.executable,
    }


def api_server_environment(port: int) -> dict[str, str]:
    """Variables for `airflow standalone` serving its UI and REST API on 127.0.0.1:`port`.

    Its tasks report to the Execution API of that same server, whose URL Airflow otherwise
    derives as http://localhost:8080/execution/ whatever the port: on any other port every task
    fails before it starts (the supervisor's connection is refused).
    """
    return {
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
    }


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
    from jobs.registry import Registry

    registry = Registry(database.Database.from_settings(settings))
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
            if CHAMPION not in version.aliases or not pending_requests(settings, model):
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
    from deltalake import DeltaTable

    from jobs.ingest import ingest_txn
    from jobs.validation import incoming_table

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


def pending_requests(settings: Settings, model: str) -> int:
    """The model's asynchronous score requests waiting for a run."""
    from jobs.score_requests import CLAIMABLE

    rows = database.Database.from_settings(settings).fetch(
        "writer",
        "SELECT count(*) FROM precompute.score_requests r JOIN precompute.models m "
        f"USING (model_id) WHERE m.name = %s AND {CLAIMABLE}",
        (model,),
    )
    return int(rows[0][0])


def check_run(settings: Settings, run_id: str, max_rejected_share: float, max_psi: float) -> str:
    """Fail (and mark the run failed) when its counts do not add up or pass the limits."""
    from jobs.run_records import RunRecorder

    rows = database.Database.from_settings(settings).fetch(
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
    recorder = RunRecorder(
        database.Database.from_settings(settings),
        run_id,
        mode,
        batch,
        lease_seconds=settings.stage_lease_seconds,
    )
    if problems:
        message = f"run {run_id}: " + "; ".join(problems)
        recorder.record_check(passed=False, error=message)
        raise RunCheckFailed(message)
    recorder.record_check(passed=True)
    drift = (
        f", PSI {psi:.4f}"
        if drift_checked
        else f", drift not checked ({scored} rows; it needs {MIN_DRIFT_ROWS})"
    )
    return f"run {run_id}: {published} predictions published, counts add up{drift}"


@dataclass(frozen=True)
class Comparison:
    """A challenger's validation metric against the champion's."""

    model: str
    challenger: int
    champion: int | None
    metric: str
    challenger_value: float
    champion_value: float | None

    @property
    def beats_champion(self) -> bool:
        if self.champion_value is None:
            return True  # no champion yet: nothing to beat
        if self.metric in LOWER_IS_BETTER:
            return self.challenger_value < self.champion_value
        return self.challenger_value > self.champion_value

    def summary(self) -> str:
        against = (
            f"champion v{self.champion} {self.champion_value:.4f}"
            if self.champion is not None and self.champion_value is not None
            else "no champion yet"
        )
        verdict = "better" if self.beats_champion else "not better"
        return (
            f"{self.model}: challenger v{self.challenger} {self.metric} "
            f"{self.challenger_value:.4f} against {against}: {verdict}"
        )


# The validation metric each task's versions are compared on.
METRIC = {"classification": "auc", "regression": "rmse"}
LOWER_IS_BETTER = {"rmse"}


def compare_challenger(settings: Settings, model: str) -> Comparison:
    """The version the `challenger` alias points at, against the `champion`'s metric."""
    from jobs.registry import Registry

    versions = Registry(database.Database.from_settings(settings)).versions(model)
    challenger = next((v for v in versions if CHALLENGER in v.aliases), None)
    if challenger is None:
        raise PrecomputeError(f"model {model!r} has no challenger version to evaluate")
    champion = next((v for v in versions if CHAMPION in v.aliases), None)
    metric = METRIC[challenger.task]
    return Comparison(
        model,
        challenger.version,
        champion.version if champion else None,
        metric,
        float(challenger.metrics[metric]),
        float(champion.metrics[metric]) if champion and metric in champion.metrics else None,
    )


def promote_challenger(settings: Settings, comparison: Comparison) -> str:
    """Make the compared challenger the champion (the caller decided it should be)."""
    return promote_version(settings, comparison.model, comparison.challenger)


def promote_version(settings: Settings, model: str, version: int) -> str:
    """Make a version the champion."""
    from jobs.registry import Registry

    promoted = Registry(database.Database.from_settings(settings)).promote(model, version=version)
    return f"{model}: champion -> {promoted.label}"
