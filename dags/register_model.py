"""
### Register a model made elsewhere: a Bundle.ML, or an XGBoost or LightGBM model file

1. **register** (`jobs/external_models.py`, what `precompute model register` runs): checks the
   bundle against the data contract (every op and attribute, every input column present with a
   type that fits and nulls only where the bundle handles them, the task and classes against
   the contract's label) and registers it as the model's next version with the chosen alias;
   every problem is listed in the task log and nothing is stored when there is one. A booster's
   model file is first packaged as a bundle over the contract's columns its feature names name.

The version scores in `score_batch` and `rescore` exactly like a trained one; promote it with
`rescore` (promote on) or `precompute model promote`.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from airflow.sdk import DAG, Param, task
from airflow.sdk.exceptions import AirflowFailException

from precompute.database import Database
from precompute.names import CHALLENGER
from precompute.settings import Settings

with DAG(
    dag_id="register_model",
    description="Register a Bundle.ML or booster model file made elsewhere against a contract.",
    doc_md=__doc__,
    schedule=None,
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    max_active_runs=1,  # registrations of one model take version numbers one after the other
    default_args={"retries": 1, "retry_delay": datetime.timedelta(minutes=1)},
    tags=["precompute", "training"],
    params={
        "model": Param("churn", type="string", minLength=1, description="Model name."),
        "bundle_path": Param(
            type="string",
            minLength=1,
            description="Bundle.ML zip or folder, or an XGBoost (.json, .ubj) or LightGBM (.txt) "
            "model file, on a path the Airflow workers can read.",
        ),
        "contract": Param(
            "customers",
            type="string",
            minLength=1,
            description="Data contract whose columns the model reads: DATASET or DATASET@VERSION.",
        ),
        # Optional inputs admit null, or the trigger form requires them (see score_batch).
        "classes": Param(
            None,
            type=["null", "string"],
            description="A classifier's class names in class-index order, comma-separated "
            "(default: the label's allowed values when as many, false,true for a boolean "
            "label, else 0..K-1).",
        ),
        "format": Param(
            None,
            type=["null", "string"],
            enum=[None, "bundle", "xgboost", "lightgbm"],
            description="What bundle_path is (default: detected from the file).",
        ),
        "alias": Param(
            CHALLENGER,
            type="string",
            minLength=1,
            description="Alias to point at the new version.",
        ),
    },
) as dag:

    @task
    def register(params: dict | None = None) -> str:  # type: ignore[type-arg]
        """Check the model against the contract and register it."""
        # numpy and the bundle runtime load when a run registers, not each time Airflow parses
        # this file.
        from jobs.bundle.format import BundleError
        from jobs.external_models import (
            ExternalModel,
            RegistrationRefused,
            parse_classes,
            parse_contract_ref,
            register_external,
        )

        p = params or {}
        dataset, version = parse_contract_ref(p["contract"])
        request = ExternalModel(
            name=p["model"],
            source=Path(p["bundle_path"]),
            dataset=dataset,
            contract_version=version,
            classes=parse_classes(p.get("classes")),
            model_format=p.get("format") or None,
            aliases=(p["alias"],),
        )
        settings = Settings()
        try:
            registered = register_external(Database.from_settings(settings), settings, request)
        except (BundleError, RegistrationRefused) as exc:
            # A refused model is refused again a minute later: fail without a retry (a
            # database that is down still retries).
            raise AirflowFailException(str(exc)) from exc
        said = f"registered {registered.label} [{p['alias']}] ({registered.model_kind})"
        print(said)
        return said

    register()
