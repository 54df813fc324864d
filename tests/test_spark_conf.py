"""The Spark session settings every job starts with (checked without starting a JVM)."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest

from jobs.jars import JarsMissing, build_profile, jar_set, profile_jar
from jobs.spark import spark_conf
from precompute.settings import Settings


def test_local_sessions_stay_on_loopback_with_this_interpreter() -> None:
    conf = spark_conf(Settings(), "job", submitted_master=None)
    assert conf["spark.master"] == "local[*]"
    assert conf["spark.driver.bindAddress"] == "127.0.0.1"
    assert conf["spark.pyspark.python"] == sys.executable
    assert conf["spark.sql.execution.arrow.maxRecordsPerBatch"] == "100000"
    assert conf["spark.sql.session.timeZone"] == "UTC"


def test_spark_submit_master_is_kept_unless_a_setting_overrides_it() -> None:
    assert spark_conf(Settings(), "job", "yarn")["spark.master"] == "yarn"
    forced = Settings(spark_master="spark://head:7077")
    assert spark_conf(forced, "job", "yarn")["spark.master"] == "spark://head:7077"


def test_gpu_scoring_on_a_cluster_asks_for_gpus() -> None:
    conf = spark_conf(Settings(scoring_device="gpu", spark_gpu_task_share=0.5), "job", "yarn")
    assert conf["spark.executor.resource.gpu.amount"] == "1"
    assert conf["spark.task.resource.gpu.amount"] == "0.5"
    assert "spark.driver.bindAddress" not in conf
    assert "spark.executor.resource.gpu.amount" not in spark_conf(Settings(), "job", "yarn")


def test_every_session_loads_delta_and_the_profile_aggregate_from_the_jar_cache() -> None:
    settings = Settings()
    conf = spark_conf(settings, "job", "spark://head:7077")
    assert conf["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    *delta, profile = (Path(j) for j in conf["spark.jars"].split(","))
    assert [j.name for j in delta] == list(jar_set("delta", settings).pinned)
    assert all(j.is_file() and j.parent == settings.jars_dir / "delta" for j in delta)
    assert profile == profile_jar(settings) and profile.is_file()


def test_workers_run_the_configured_python_on_any_master() -> None:
    for master in (None, "spark://head:7077", "yarn"):
        conf = spark_conf(Settings(spark_python="/opt/py/bin/python"), "job", master)
        assert conf["spark.pyspark.python"] == "/opt/py/bin/python"


def test_extra_spark_conf_wins() -> None:
    conf = spark_conf(Settings(spark_conf={"spark.sql.shuffle.partitions": "3"}), "job", None)
    assert conf["spark.sql.shuffle.partitions"] == "3"


def test_the_profile_aggregate_is_built_from_its_source_and_refused_when_stale(
    tmp_path: Path,
) -> None:
    """`make setup` compiles jvm/profile with javac; a job refuses a JAR missing or built from
    other source (or another PySpark), naming the command that builds it."""
    settings = Settings(jars_dir=tmp_path)
    with pytest.raises(JarsMissing, match=r"built from other source .*run `make setup`"):
        profile_jar(settings)
    assert build_profile(settings).startswith("profile: built ")
    jar = profile_jar(settings)
    with zipfile.ZipFile(jar) as built:
        assert "precompute/profile/ProfileAggregate.class" in built.namelist()
    assert "built already" in build_profile(settings)
    jar.with_suffix(".sha256").write_text("from other source\n")
    with pytest.raises(JarsMissing, match="missing, or was built from other source"):
        profile_jar(settings)
