"""Guards on the pinned dependency set: distributions that share files must agree."""

from __future__ import annotations

import importlib
from importlib import metadata

import pytest


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def test_pyspark_and_pyspark_client_are_the_same_version() -> None:
    # Both install into pyspark/: a mismatch silently mixes files of two Spark versions.
    assert installed("pyspark-client") == installed("pyspark") == "4.2.0"


def test_psycopg2_comes_from_one_distribution_only() -> None:
    # psycopg2 and psycopg2-binary both install psycopg2/; the Airflow provider needs -binary.
    assert installed("psycopg2-binary") is not None
    assert installed("psycopg2") is None


def test_pandas_is_a_version_pyspark_supports() -> None:
    version = installed("pandas")
    assert version is not None and int(version.split(".")[0]) < 3


@pytest.mark.parametrize(
    "module",
    [
        "airflow.sdk",
        "airflow.providers.apache.spark.operators.spark_submit",
        "airflow.providers.postgres.hooks.postgres",
        "airflow.providers.standard.operators.python",
        "deltalake",
        "delta",
        "mleap.sklearn.pipeline",
        "treelite",
        "fastapi",
    ],
)
def test_the_stack_imports_together(module: str) -> None:
    importlib.import_module(module)
