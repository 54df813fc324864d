"""Train a model and register it: read labelled data, fit, evaluate, write an MLeap bundle.

Run with `precompute train` or `spark-submit jobs/train.py`. The training data is a Delta table
in the lake (`--table`, at its latest or a given version) or batch files (`--input`), and must
meet the dataset's contract plus its label: any row that breaks it fails the run with the rows
and reasons, since a model should not silently learn from fewer or different rows than asked.

This module is the job's command line and spark-submit entry point: `jobs.training_data` reads
and checks the rows, `jobs.fitting` fits, evaluates and registers the model.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from jobs.model_kinds import MODEL_KINDS
from jobs.spark import spark_session
from jobs.train_request import TrainingDataError, TrainRequest
from precompute.commands import job_main
from precompute.database import Database
from precompute.names import CHALLENGER
from precompute.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model name, e.g. churn")
    parser.add_argument("--dataset", required=True, help="contract name, e.g. customers")
    parser.add_argument("--kind", required=True, choices=MODEL_KINDS, help="estimator")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="labelled batch files (CSV, JSON lines or Parquet)")
    source.add_argument("--table", help="a Delta table in the lake, e.g. training/customers")
    parser.add_argument("--table-version", type=int, help="Delta version (default: latest)")
    parser.add_argument("--contract-version", type=int, help="default: the newest")
    parser.add_argument("--task", choices=["classification", "regression"])
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="estimator parameter, e.g. --param n_estimators=200 (repeatable)",
    )
    parser.add_argument("--validation-share", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--alias",
        action="append",
        help=f"alias(es) to point at the new version (default: {CHALLENGER})",
    )
    parser.add_argument("--description", default="")


def request_from(args: argparse.Namespace) -> TrainRequest:
    params = {}
    for item in args.param:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise TrainingDataError(f"--param {item!r}: write NAME=VALUE")
        try:
            params[name] = json.loads(text)
        except json.JSONDecodeError:
            params[name] = text
    return TrainRequest(
        model=args.model,
        dataset=args.dataset,
        kind=args.kind,
        input_path=args.input,
        table=args.table,
        table_version=args.table_version,
        contract_version=args.contract_version,
        task=args.task,
        params=params,
        validation_share=args.validation_share,
        seed=args.seed,
        aliases=tuple(args.alias) if args.alias else (CHALLENGER,),
        description=args.description,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """spark-submit entry point: same arguments as `precompute train`."""
    return job_main("train", __doc__, add_arguments, run, argv)


def run(args: argparse.Namespace, settings: Settings) -> int:
    # scikit-learn takes seconds to import: `precompute` builds its parser from this module.
    from jobs.fitting import train

    request = request_from(args)
    spark = spark_session(settings, "precompute-train")
    print(train(spark, settings, Database.from_settings(settings), request).summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
