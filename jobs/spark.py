"""The one Spark session builder every job uses."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

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
        "spark.sql.adaptive.enabled": "true",
        # With pruning on, a CSV line with too few or too many fields is not flagged as
        # corrupt when only some columns are selected; ingest must see every such line.
        "spark.sql.csv.parser.columnPruning.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        # Validation compiles to one large generated method per stage; HotSpot leaves methods
        # over 8 KB interpreted unless told otherwise, which made ingest ~3x slower.
        "spark.driver.extraJavaOptions": "-XX:-DontCompileHugeMethods",
        "spark.executor.extraJavaOptions": "-XX:-DontCompileHugeMethods",
    }
    if master.startswith("local"):
        # The host name resolves to an unroutable address on these machines; stay on loopback.
        conf |= {
            # Workers must run this interpreter: another python lacks pyarrow and this project.
            # (On a cluster, set spark.pyspark.python to the executors' interpreter.)
            "spark.pyspark.python": sys.executable,
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.ui.enabled": "false",
            # Few cores: 200 shuffle partitions would be mostly scheduling overhead.
            "spark.sql.shuffle.partitions": "16",
        }
    elif settings.scoring_device == "gpu":
        # On a cluster, ask the scheduler for GPUs so scoring tasks land where one is.
        conf |= {
            "spark.executor.resource.gpu.amount": "1",
            "spark.task.resource.gpu.amount": str(settings.spark_gpu_task_share),
        }
    if settings.lake_engine == "delta-spark":
        conf |= {
            "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
            "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        }
    return conf | settings.spark_conf


def spark_session(settings: Settings, app_name: str) -> SparkSession:
    """Start (or join) the Spark session for a job, configured from the settings."""
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
    if conf["spark.master"].startswith("local"):
        # Python data source planning starts workers from these variables, not from the conf.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session
