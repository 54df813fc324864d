"""Names and limits the jobs, the lookup API, the command line and the DAGs share: each is
written here once (the database's CHECKs say the same in sql/)."""

from __future__ import annotations

import datetime
from typing import Literal

# The alias whose version serves lookups and answers score requests, and the one a training run
# registers a candidate under.
CHAMPION = "champion"
CHALLENGER = "challenger"

# Model and alias names (the CHECKs in sql/0002_model_registry.sql).
NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"

# API key scopes (the CHECK in sql/0005_api_keys_and_score_requests.sql).
READ_SCOPE = "predictions:read"
SUBMIT_SCOPE = "score-requests:write"
SCOPES = (READ_SCOPE, SUBMIT_SCOPE)

# The Airflow asset the scoring DAG's check emits when a run's feature drift crosses a fail
# threshold (with PRECOMPUTE_RETRAIN_ON_DRIFT): the train_model DAG is scheduled on it.
DRIFT_ASSET = "precompute-drift"

# Where the lookup API serves a run's report (the check task links to it).
RUN_REPORT_PATH = "/v1/runs/{run_id}/report"

# Where a model scores: "auto" takes a GPU when one is present.
Device = Literal["auto", "cpu", "gpu"]

# Run ids. A batch's run is named by its batch, so rescoring the same batch with the same version
# is the same run (and a rerun changes nothing); a full rescore or a run for score requests has
# no batch to name it, so it is named by when it was planned.
RunMode = Literal["incremental", "full", "requests"]


def run_stamp(now: datetime.datetime | None = None) -> str:
    """The UTC time in a run id: sortable, and safe in paths and Airflow run ids."""
    return (now or datetime.datetime.now(datetime.UTC)).strftime("%Y%m%dT%H%M%SZ")


def run_id(
    mode: RunMode, model: str, version: int, batch_id: str | None = None, stamp: str | None = None
) -> str:
    if mode == "incremental":
        return f"score-{batch_id}-{model}-v{version}"
    kind = "rescore" if mode == "full" else "requests"
    return f"{kind}-{model}-v{version}-{stamp or run_stamp()}"
