"""The one Spark session builder every job uses."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from jobs.jars import jar_set, profile_jar
from precompute.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

LOCAL_MASTER = "local[*]"


def spark_conf(settings: Settings, app_name: str, submitted_master: str | None) -> dict[str, str]:
    """The Spark settings for a job: pure, so tests can check them without a JVM."""
    master = settings.spark_master or submitted_master or LOCAL_MASTER
    conf = {
        "spark.master": master,
        "spark.app.name": app_name,
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(settings.spark_arrow_batch_rows),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # Delta stores instants in UTC; a session in local time would shift Arrow timestamps.
        "spark.sql.session.timeZone": "UTC",
        # INT96 (Spark's default) is not a Delta timestamp type.
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.driver.memory": settings.spark_driver_memory,
        # Producers' CSV comes in more encodings than the few Spark 4 allows by default.
        "spark.sql.legacy.javaCharsets": "true",
        # pandas writes nanosecond timestamps, which Spark cannot read as timestamps: read them
        # as their numbers, which ingest converts knowing the unit (jobs.batch_reader).
        "spark.sql.legacy.parquet.nanosAsLong": "true",
        "spark.sql.adaptive.enabled": "true",
        # With pruning on, a CSV line with too few or too many fields is not flagged as
        # corrupt when only some columns are selected; ingest must see every such line.
        "spark.sql.csv.parser.columnPruning.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        # Validation compiles to one large generated method per stage; HotSpot leaves methods
        # over 8 KB interpreted unless told otherwise, which made ingest ~3x slower.
        "spark.driver.extraJavaOptions": "-XX:-DontCompileHugeMethods",
        "spark.executor.extraJavaOptions": "-XX:-DontCompileHugeMethods",
        # Workers must run an interpreter with pyarrow and this project, on any master: left
        # unset, a cluster's executors start whatever `python3` they find.
        "spark.pyspark.python": settings.spark_python,
        # Delta Lake is the lake engine, and the profile aggregate profiles ingested batches. The
        # JARs come from the project's cache (never fetched at run time); Spark serves them to
        # a cluster's executors itself.
        "spark.jars": ",".join(
            str(p) for p in [*jar_set("delta", settings).files(), profile_jar(settings)]
        ),
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    }
    if master.startswith("local"):
        # The host name resolves to an unroutable address on these machines; stay on loopback.
        conf |= {
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.ui.enabled": "false",
            # Few cores: 200 shuffle partitions would be mostly scheduling overhead.
            "spark.sql.shuffle.partitions": "16",
            # Delta rebuilds a table's state with a job of this many tasks (50 by default), on
            # every first read of a table: on a few local cores most of that is scheduling.
            "spark.databricks.delta.snapshotPartitions": str(min(os.cpu_count() or 2, 8)),
        }
    elif settings.scoring_device == "gpu":
        # On a cluster, ask the scheduler for GPUs so scoring tasks land where one is.
        conf |= {
            "spark.executor.resource.gpu.amount": "1",
            "spark.task.resource.gpu.amount": str(settings.spark_gpu_task_share),
        }
    return conf | settings.spark_conf


def spark_session(settings: Settings, app_name: str) -> SparkSession:
    """Start (or join) the Spark session for a job, configured from the settings."""
    # pyspark is heavy: the command line and the DAGs import this module without starting Spark.
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    submitted = None
    if "PYSPARK_GATEWAY_PORT" in os.environ:
        # Under spark-submit the JVM is already up with the master from its command line:
        # keep that one unless a setting says otherwise.
        SparkContext._ensure_initialized()
        submitted = SparkConf().get("spark.master", None)
    conf = spark_conf(settings, app_name, submitted)
    # PySpark takes the workers' interpreter from this variable of the driver, whatever the
    # master (spark.pyspark.python only reaches spark-submit): executors run what it names.
    os.environ["PYSPARK_PYTHON"] = settings.spark_python
    if conf["spark.master"].startswith("local"):
        # Spark's own scripts pick the address to bind from this, not from the conf.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session
