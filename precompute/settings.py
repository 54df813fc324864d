"""The one typed settings object, read from the environment with embedded defaults under var/.

Over 300 lines because `Settings` is one class with a documented field per setting; split, a
reader would have to look in several places for what can be set.
"""

from __future__ import annotations

import ipaddress
import json
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from precompute.names import Device

# Placeholders that are fine on a laptop and refused in production.
DEV_WRITER_PASSWORD = "precompute-writer-dev"
DEV_READER_PASSWORD = "precompute-reader-dev"
DEV_CALLBACK_SECRET = "precompute-callback-dev"
DEV_API_PASSWORD = "precompute-api-dev"


def project_root() -> Path:
    """The source checkout when running from one, else the working directory."""
    checkout = Path(__file__).resolve().parents[1]
    return checkout if (checkout / "pyproject.toml").is_file() else Path.cwd()


class Settings(BaseSettings):
    """Everything configurable; each field is the env var PRECOMPUTE_<NAME> unless noted."""

    model_config = SettingsConfigDict(env_prefix="PRECOMPUTE_", extra="ignore")

    environment: Literal["development", "production"] = Field(
        "development",
        description="'production' refuses the development placeholder passwords.",
    )
    var_dir: Path = Field(
        default_factory=lambda: (project_root() / "var").resolve(),
        description="Root of the embedded state; the other paths default to folders under it.",
    )
    lake_uri: str = Field(
        default_factory=lambda data: str(data["var_dir"] / "lake"),
        description="Delta Lake root (a path or object-store URI).",
    )
    models_root: str = Field(
        default_factory=lambda data: str(data["var_dir"] / "models"),
        description="Where model bundles are stored (a path or object-store URI).",
    )
    contracts_dir: Path = Field(
        default_factory=lambda: project_root() / "contracts",
        description="Dataset contracts: <name>/v<version>.toml files describing each input.",
    )
    landing_root: str = Field(
        default_factory=lambda data: str(data["var_dir"] / "landing"),
        description="Where incoming batches land, one folder per batch (see the landing "
        "contract in the README).",
    )
    landing_require_marker: bool = Field(
        False,
        description="Take a batch folder only once it holds a _SUCCESS file; off: a folder is "
        "ready when it appears (producers rename it into place whole).",
    )
    landing_poll_seconds: float = Field(
        1.0,
        gt=0,
        le=3600,
        description="How often Airflow's triggerer looks for newly landed batch folders.",
    )
    jars_dir: Path = Field(
        default_factory=lambda: project_root() / ".jars",
        description="JAR cache: the pinned JVM artifacts `make` fetches (jvm/<set>/), which "
        "the jobs load from here and never download at run time.",
    )
    spark_master: str | None = Field(
        None,
        description="Spark master URL. Unset: the one spark-submit was given, else local[*].",
    )
    spark_driver: Literal["auto", "submit"] = Field(
        "auto",
        description="How the DAGs' Spark tasks run: auto hands them to the warm driver "
        "(`precompute spark-driver`) when one answers, else spark-submits them; submit always "
        "spark-submits.",
    )
    spark_driver_port: int = Field(
        55434, ge=1024, le=65535, description="Port of the warm driver on 127.0.0.1."
    )
    spark_python: str = Field(
        default_factory=lambda: sys.executable,
        description="The Python interpreter Spark's Python workers run (spark.pyspark.python), on "
        "every master: it needs pyarrow and this project. Default: the one running the job.",
    )
    spark_driver_memory: str = Field(
        "2g", description="spark.driver.memory for sessions this project starts."
    )
    spark_arrow_batch_rows: int = Field(
        100_000,
        ge=1_000,
        description="Rows per Arrow batch between Spark and Python "
        "(spark.sql.execution.arrow.maxRecordsPerBatch).",
    )
    spark_conf: dict[str, str] = Field(
        default_factory=dict,
        description='Extra Spark settings as JSON, e.g. {"spark.executor.memory": "8g"}.',
    )
    scoring_device: Device = Field(
        "auto", description="Where models score: 'auto' uses a GPU when one is present."
    )
    spark_gpu_task_share: float = Field(
        0.25,
        gt=0,
        le=1,
        description="GPUs per Spark task when scoring on 'gpu' on a cluster "
        "(0.25: four tasks share one GPU).",
    )
    max_rejected_share: float = Field(
        0.05,
        ge=0,
        le=1,
        description="An ingest fails (after writing the quarantine) when more than this share "
        "of a batch's rows is rejected.",
    )
    score_schedule: str | None = Field(
        None,
        description="A cron schedule on which the scoring DAG also looks for new batch folders, "
        "besides the landing watcher that starts it when one lands; empty: none.",
    )
    max_psi: float = Field(
        0.25,
        ge=0,
        description="The scoring DAG's check fails a run whose score drift (PSI against the "
        "model's training reference) is above this.",
    )
    profile_batches: bool = Field(
        True,
        description="Profile every ingested batch's features in the ingest's own pass (see "
        "Data quality and drift); off only to measure what profiling costs.",
    )
    drift_warn_psi: float = Field(
        0.1,
        ge=0,
        description="A feature whose PSI against the model's training data is above this gets "
        "a warning from the scoring DAG's check (a contract column's drift.warn overrides it).",
    )
    drift_fail_psi: float = Field(
        0.25,
        ge=0,
        description="A feature whose PSI against the model's training data is above this fails "
        "the scoring DAG's check, named (a contract column's drift.fail overrides it).",
    )
    drift_warn_missing: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Warn when a feature's missing share differs from training by more than "
        "this (a contract column's drift.missing_warn overrides it).",
    )
    drift_fail_missing: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Fail the check when a feature's missing share differs from training by "
        "more than this (a contract column's drift.missing_fail overrides it).",
    )
    retrain_on_drift: bool = Field(
        False,
        description="When a run's feature drift crosses a fail threshold, emit the Airflow "
        "asset `precompute-drift`, which schedules the train_model DAG.",
    )
    publish_streams: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Parallel COPY connections when publishing. Unset: Spark's default "
        "parallelism.",
    )
    stage_lease_seconds: int = Field(
        120,
        ge=3,
        description="A running stage renews its lease every third of this; a stage (and its run) "
        "still running past its lease is abandoned (its job was killed or lost), and the next "
        "attempt takes over.",
    )
    serving_versions_kept: int = Field(
        3,
        ge=1,
        description="Model versions of each model kept in the serving tables; older ones are "
        "removed by `precompute serving prune` (versions an alias points at are always kept).",
    )
    lake_retention_hours: int = Field(
        168,
        ge=0,
        description="Maintenance vacuums Delta files no table version newer than this reads "
        "(it also bounds time travel).",
    )
    run_records_kept_days: int = Field(
        90,
        ge=1,
        description="Maintenance deletes run records finished longer ago than this, unless "
        "their model version is still served.",
    )
    score_requests_kept_days: int = Field(
        30,
        ge=1,
        description="Maintenance deletes score requests finished (done or failed) longer ago "
        "than this; their Idempotency-Key can then be used again.",
    )
    api_host: str = Field("127.0.0.1", description="Address the lookup API listens on.")
    api_port: int = Field(8000, ge=1, le=65535, description="Port the lookup API listens on.")
    api_workers: int = Field(1, ge=1, le=64, description="Lookup API worker processes.")
    api_public_url: str | None = Field(
        None,
        description="The lookup API's address as its readers reach it (a load balancer's, say), "
        "for the links to run reports; unset: http://API_HOST:API_PORT.",
    )
    api_pool_size: int = Field(
        8, ge=1, le=100, description="Database connections per lookup API worker."
    )
    api_statement_timeout_ms: int = Field(
        2000, ge=10, description="Longest a lookup API query may run before it is cancelled."
    )
    api_key_cache_seconds: float = Field(
        10.0,
        ge=0,
        description="How long the lookup API trusts a checked API key before asking the "
        "database again (a revoked key is refused at most this long after).",
    )
    api_max_request_bytes: int = Field(
        16_384, ge=1024, description="Largest score request body the lookup API accepts."
    )
    api_max_batch_bytes: int = Field(
        1_048_576,
        ge=1024,
        description="Largest batchGet body the lookup API accepts; the default admits 1,000 ids "
        "of 256 characters written as raw UTF-8.",
    )
    api_metrics: Literal["off", "key", "open"] = Field(
        "key",
        description="Who may read the lookup API's /metrics: nobody ('off': 404), callers with "
        "a predictions:read key ('key'), or anyone who reaches the port ('open').",
    )
    api_max_pending_requests: int = Field(
        1000,
        ge=1,
        description="Score requests one API key may have waiting to be scored.",
    )
    lookup_log: bool = Field(
        True,
        description="Spool every lookup and batchGet's record for the lookup log (the Delta "
        "table lookup_log and analytics.lookup_traffic); off: stdout only.",
    )
    lookup_log_dir: Path = Field(
        default_factory=lambda data: data["var_dir"] / "lookup-log",
        description="The lookup log's spool folder: the API writes files here, the shipper "
        "(`precompute lookup-log ship`) moves them into the lake. On a local disk (the "
        "files' locks say which writer is alive).",
    )
    lookup_log_flush_seconds: float = Field(
        1.0,
        gt=0,
        le=60,
        description="How often each API process writes its queued lookup records to its spool "
        "file: an API process killed outright loses at most this long of records.",
    )
    lookup_log_rotate_seconds: float = Field(
        60.0,
        gt=0,
        description="How long an API process writes one spool file before it closes it; "
        "the shipper takes only closed files.",
    )
    callback_max_attempts: int = Field(
        5, ge=1, le=20, description="Deliveries tried per score request callback."
    )
    callback_backoff_seconds: float = Field(
        2.0, ge=0, description="Delay before a callback's second try; it doubles after each."
    )
    callback_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Longest one callback delivery may take in all: name lookup, connection, "
        "sending and the receiver's reply. A receiver still answering then has failed.",
    )
    callback_concurrency: int = Field(
        8, ge=1, le=64, description="Callback deliveries in flight at once, per deliverer."
    )
    callback_publish_seconds: float = Field(
        30.0,
        ge=0,
        description="How long a publish, once committed, goes on starting callback deliveries; "
        "what is left waits for the next publish or `precompute score-requests deliver`.",
    )
    callback_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts (names or addresses) and networks (CIDR) callbacks may reach although "
        "they are not public internet addresses, comma-separated, e.g. 127.0.0.1,10.0.0.0/8.",
    )
    callback_secret: SecretStr = Field(
        SecretStr(DEV_CALLBACK_SECRET),
        description="Key of the HMAC-SHA256 signature on every callback body "
        "(X-Precompute-Signature), which receivers check.",
    )
    score_request_max_attempts: int = Field(
        3,
        ge=1,
        le=100,
        description="Scoring runs that may claim one score request; after that many claims "
        "without a publish it is failed, so one request cannot fail run after run.",
    )
    score_request_lease_seconds: float = Field(
        3600.0,
        ge=1,
        description="How long a run's claim on score requests holds; longer than a run's "
        "score and publish take. A run that fails releases its claim at once.",
    )
    airflow_port: int = Field(
        8080, ge=1, le=65535, description="Port of the demo's Airflow UI and REST API."
    )
    airflow_home: Path = Field(
        default_factory=lambda data: data["var_dir"] / "airflow",
        description="AIRFLOW_HOME for the embedded Airflow.",
    )

    database_url: SecretStr | None = Field(
        None,
        validation_alias="DATABASE_URL",
        description="An external PostgreSQL (admin URL, used for migrations). "
        "Unset: the project starts and owns an embedded server under pg_dir.",
    )
    pg_dir: Path = Field(
        default_factory=lambda data: data["var_dir"] / "pg",
        description="Embedded PostgreSQL folder (data, log, admin password).",
    )
    pg_port: int = Field(55432, ge=1024, le=65535, description="Embedded PostgreSQL TCP port.")
    pg_database: str = Field("precompute", description="Database name on the embedded server.")
    writer_password: SecretStr = Field(
        SecretStr(DEV_WRITER_PASSWORD), description="Password of the precompute_writer role."
    )
    reader_password: SecretStr = Field(
        SecretStr(DEV_READER_PASSWORD), description="Password of the precompute_reader role."
    )
    api_password: SecretStr = Field(
        SecretStr(DEV_API_PASSWORD), description="Password of the precompute_api role."
    )

    @field_validator("callback_allowed_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        # One line in an environment file; a JSON list works too.
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                value = json.loads(value)
            else:
                value = [part.strip() for part in value.split(",") if part.strip()]
        for entry in value if isinstance(value, list) else ():
            if isinstance(entry, str) and "/" in entry:
                ipaddress.ip_network(entry.strip(), strict=False)  # ValueError names the entry
        return value

    @field_validator("lake_uri", "models_root", "landing_root")
    @classmethod
    def _absolute_location(cls, value: str) -> str:
        # Spark executors and delta-rs resolve relative paths from different places.
        return value if "://" in value else str(Path(value).expanduser().resolve())

    @model_validator(mode="after")
    def _refuse_placeholders_in_production(self) -> Settings:
        if self.environment == "production":
            placeholders = [
                name
                for name, value, placeholder in (
                    ("PRECOMPUTE_WRITER_PASSWORD", self.writer_password, DEV_WRITER_PASSWORD),
                    ("PRECOMPUTE_READER_PASSWORD", self.reader_password, DEV_READER_PASSWORD),
                    ("PRECOMPUTE_CALLBACK_SECRET", self.callback_secret, DEV_CALLBACK_SECRET),
                    ("PRECOMPUTE_API_PASSWORD", self.api_password, DEV_API_PASSWORD),
                )
                if value.get_secret_value() == placeholder
            ]
            if placeholders:
                raise ValueError(
                    "production refuses the development placeholder for "
                    + ", ".join(placeholders)
                    + ": set a real secret"
                )
            if self.database_url is None:
                raise ValueError("production needs DATABASE_URL (the embedded server is for dev)")
        return self

    @property
    def embedded_database(self) -> bool:
        """True when the project runs its own PostgreSQL (no DATABASE_URL)."""
        return self.database_url is None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()


# Spark's own default for spark.redaction.regex: what it hides in its UI and logs, we hide too.
SECRET_KEY = re.compile(r"(?i)secret|password|token|access[.]key")


def printable(settings: Settings) -> dict[str, Any]:
    """The settings as `precompute settings` shows them: secrets masked, Spark's included."""
    values = settings.model_dump()
    values["spark_conf"] = {
        key: "**********" if SECRET_KEY.search(key) else value
        for key, value in settings.spark_conf.items()
    }
    return values


def describe_settings_error(error: ValidationError) -> str:
    """One line per bad setting, named by its environment variable."""
    lines = []
    for problem in error.errors():
        if problem["type"] == "default_factory_not_called":
            continue  # a consequence of another error in the list, not a problem of its own
        if not problem["loc"]:
            lines.append(f"  {problem['msg'].removeprefix('Value error, ')}")
            continue
        name = str(problem["loc"][0])
        field = Settings.model_fields.get(name)
        alias = field.validation_alias if field else None
        variable = alias if isinstance(alias, str) else f"PRECOMPUTE_{name.upper()}"
        lines.append(f"  {variable}: {problem['msg']} (got {problem.get('input')!r})")
    return "\n".join(lines)
