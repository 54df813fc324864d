"""Delta Lake tables for the jobs, through the engine the settings choose."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobs.lake.base import CommitResult, LakeEngine, LakeError, StagedWrite, Target, Txn
from precompute.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["CommitResult", "LakeEngine", "LakeError", "StagedWrite", "Target", "Txn", "lake"]


def lake(spark: SparkSession, settings: Settings) -> LakeEngine:
    """The lake engine named by PRECOMPUTE_LAKE_ENGINE, ready for this session."""
    if settings.lake_engine == "delta-spark":
        from jobs.lake.delta_spark import DeltaSparkEngine

        return DeltaSparkEngine(spark, settings.lake_uri)
    from jobs.lake.delta_rs import DeltaRsEngine

    return DeltaRsEngine(spark, settings.lake_uri)
