"""The batch stages as commands: ingest, train, score, publish, serving prune, maintenance and
the lookup log's shipper, and a run's report.

Each stage defines its own arguments and `run`, so the command, `spark-submit jobs/X.py` and
the DAG tasks take the same ones.
"""

from __future__ import annotations

import argparse
import sys

from cli.parsers import Commands
from jobs import (
    ingest,
    lookup_log,
    maintenance,
    publish,
    run_report,
    score,
    serving_prune,
    train,
)
from precompute.database import Database
from precompute.errors import PrecomputeError
from precompute.settings import Settings


def add_to(commands: Commands) -> None:
    stages = (
        (ingest, "ingest", "validate a batch into the incoming and quarantine Delta tables"),
        (train, "train", "train a model on labelled data and register it as a new version"),
        (score, "score", "score a batch (or every entity) into the Delta predictions history"),
        (publish, "publish", "publish a scored run's predictions to PostgreSQL, atomically"),
    )
    for stage, name, help_text in stages:
        command = commands.add_parser(name, help=help_text)
        stage.add_arguments(command)
        command.set_defaults(handler=stage.run)

    serving_command = commands.add_parser("serving", help="the PostgreSQL serving tables")
    actions = serving_command.add_subparsers(required=True, metavar="ACTION")
    prune = actions.add_parser(
        "prune",
        help="remove served versions beyond PRECOMPUTE_SERVING_VERSIONS_KEPT per model",
    )
    prune.add_argument("--keep", type=int, help="versions to keep per model (default: the setting)")
    prune.set_defaults(handler=prune_serving)

    commands.add_parser(
        "maintenance", help="compact and vacuum the Delta tables; drop old run records"
    ).set_defaults(handler=maintenance.run)

    log_command = commands.add_parser("lookup-log", help="the lookup API's request log")
    log_actions = log_command.add_subparsers(required=True, metavar="ACTION")
    log_actions.add_parser(
        "ship",
        help="move the closed spool files (PRECOMPUTE_LOOKUP_LOG_DIR) into the Delta table "
        "lookup_log and their hours into analytics.lookup_traffic",
    ).set_defaults(handler=lookup_log.run)

    run_command = commands.add_parser("run", help="a scoring run's records")
    run_actions = run_command.add_subparsers(required=True, metavar="ACTION")
    report = run_actions.add_parser(
        "report", help="the run's HTML report on stdout: the stored one, or rendered now"
    )
    report.add_argument("run_id", metavar="RUN_ID")
    report.add_argument(
        "--render", action="store_true", help="render it from the run's records now"
    )
    report.set_defaults(handler=print_report)


def prune_serving(args: argparse.Namespace, settings: Settings) -> int:
    keep = settings.serving_versions_kept if args.keep is None else args.keep
    if keep < 1:
        raise PrecomputeError("--keep must be at least 1")
    db = Database.from_settings(settings)
    removed = serving_prune.prune(db.url("writer"), db.hint, keep)
    for r in removed:
        print(f"removed {r.model} v{r.version} from serving ({r.rows} predictions)")
    if not removed:
        print(f"nothing to remove: no model serves more than {keep} versions")
    return 0


def print_report(args: argparse.Namespace, settings: Settings) -> int:
    db = Database.from_settings(settings)
    html = None if args.render else run_report.stored_report(db, args.run_id)
    if html is None:
        if not args.render:
            print(
                f"run {args.run_id} has no stored report (its check has not run): "
                "rendered from its records now",
                file=sys.stderr,
            )
        html = run_report.render_report(db, args.run_id)
    sys.stdout.write(html)
    return 0
