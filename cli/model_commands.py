"""`precompute model`: the registry's versions and aliases, registering a model made elsewhere,
and checking a bundle against MLeap's own runtime."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from cli.parsers import Commands
from jobs import bundle_store
from jobs.registry import Registry
from precompute import serving_store
from precompute.database import Database
from precompute.errors import PrecomputeError
from precompute.names import CHALLENGER, CHAMPION
from precompute.settings import Settings


def add_to(commands: Commands) -> None:
    model = commands.add_parser("model", help="the model registry: versions and aliases")
    actions = model.add_subparsers(required=True, metavar="ACTION")
    actions.add_parser("list", help="models, version counts and aliases").set_defaults(
        handler=list_models
    )
    show_command = actions.add_parser("show", help="a model's versions, metrics and aliases")
    show_command.add_argument("name")
    show_command.set_defaults(handler=show)

    promote_command = actions.add_parser(
        "promote", help="point an alias (champion by default) at a version"
    )
    promote_command.add_argument("name")
    target = promote_command.add_mutually_exclusive_group(required=True)
    target.add_argument("--version", type=int, help="version number to promote")
    target.add_argument("--from-alias", help="promote the version this alias points at")
    promote_command.add_argument(
        "--alias", default=CHAMPION, help=f"alias to move (default: {CHAMPION})"
    )
    promote_command.set_defaults(handler=promote)

    rollback_command = actions.add_parser(
        "rollback", help="undo an alias's last move (champion by default)"
    )
    rollback_command.add_argument("name")
    rollback_command.add_argument("--alias", default=CHAMPION)
    rollback_command.set_defaults(handler=rollback)

    register_command = actions.add_parser(
        "register",
        help="register a model made elsewhere (Bundle.ML zip or folder, XGBoost or LightGBM "
        "model file) against a data contract",
    )
    register_command.add_argument("name", help="model name, e.g. churn")
    register_command.add_argument(
        "bundle", type=Path, help="Bundle.ML zip or folder, or model.json|model.ubj|model.txt"
    )
    register_command.add_argument(
        "--contract",
        required=True,
        metavar="DATASET[@VERSION]",
        help="the data contract whose columns the model reads (default version: the newest)",
    )
    register_command.add_argument(
        "--classes",
        metavar="A,B,...",
        help="a classifier's class names in class-index order (default: the contract label's "
        "allowed values when as many, false,true for a boolean label, else 0..K-1)",
    )
    register_command.add_argument(
        "--format",
        choices=["bundle", "xgboost", "lightgbm"],
        help="what BUNDLE is (default: detected from the file)",
    )
    register_command.add_argument(
        "--alias",
        action="append",
        help=f"alias(es) to point at the new version (default: {CHALLENGER})",
    )
    register_command.add_argument("--description", default="")
    register_command.set_defaults(handler=register)

    verify_command = actions.add_parser(
        "verify", help="score a version with MLeap's own runtime and ours; they must agree"
    )
    verify_command.add_argument("name", metavar="NAME[@VERSION]", help="model, optionally @version")
    verify_command.add_argument(
        "--alias", default=CHAMPION, help=f"without @VERSION (default: {CHAMPION})"
    )
    verify_command.add_argument("--input", help="rows to check on (default: its training data)")
    verify_command.add_argument(
        "--rows", type=int, default=2000, help="rows to check (default: 2000)"
    )
    verify_command.set_defaults(handler=verify)


def list_models(args: argparse.Namespace, settings: Settings) -> int:
    models = Registry(Database.from_settings(settings)).models()
    if not models:
        print("no models registered yet: `precompute train` registers one")
        return 0
    print(f"{'MODEL':<24} {'TASK':<15} {'VERSIONS':>8}  ALIASES")
    for m in models:
        aliases = ", ".join(f"{a}=v{v}" for a, v in sorted(m.aliases.items())) or "-"
        print(f"{m.name:<24} {m.task:<15} {m.versions:>8}  {aliases}")
    return 0


def show(args: argparse.Namespace, settings: Settings) -> int:
    for v in Registry(Database.from_settings(settings)).versions(args.name):
        aliases = f"  [{', '.join(v.aliases)}]" if v.aliases else ""
        metrics = "  ".join(
            f"{k}={val:.4f}" for k, val in v.metrics.items() if isinstance(val, int | float)
        )
        print(f"v{v.version}{aliases}  {v.model_kind}  {metrics}")
        print(f"    id {v.version_id}, registered {v.created_at:%Y-%m-%d %H:%M:%S %Z}")
        print(f"    bundle {v.bundle_uri}  sha256 {v.bundle_sha256[:16]}…")
        contract = v.input_schema
        print(f"    input contract {contract.get('dataset')}/v{contract.get('version')}")
        if v.training_data:
            data = ", ".join(f"{k}={val}" for k, val in v.training_data.items())
            print(f"    trained on {data}")
    return 0


def promote(args: argparse.Namespace, settings: Settings) -> int:
    db = Database.from_settings(settings)
    version = Registry(db).promote(
        args.name, version=args.version, from_alias=args.from_alias, alias=args.alias
    )
    print(f"{args.alias} -> {version.label} (id {version.version_id})")
    served = db.fetch(
        "writer",
        f"SELECT 1 FROM {serving_store.SERVING_VERSIONS} WHERE model_version_id = %s",
        (version.version_id,),
    )
    if not served:
        print(
            f"note: {version.label} serves no predictions yet: lookups through {args.alias!r} "
            "answer 404 until a run publishes some (the rescore DAG scores every entity)"
        )
    return 0


def rollback(args: argparse.Namespace, settings: Settings) -> int:
    before, after = Registry(Database.from_settings(settings)).rollback(args.name, alias=args.alias)
    print(f"{args.alias}: {before.label} -> {after.label}")
    return 0


def register(args: argparse.Namespace, settings: Settings) -> int:
    # The bundle reader needs numpy and the booster packaging the boosting libraries: only this
    # command loads them.
    from jobs import external_models

    dataset, version = external_models.parse_contract_ref(args.contract)
    request = external_models.ExternalModel(
        name=args.name,
        source=args.bundle,
        dataset=dataset,
        contract_version=version,
        classes=external_models.parse_classes(args.classes),
        model_format=args.format,
        aliases=tuple(args.alias) if args.alias else (CHALLENGER,),
        description=args.description,
    )
    registered = external_models.register_external(
        Database.from_settings(settings), settings, request
    )
    aliases = f" [{', '.join(registered.aliases)}]" if registered.aliases else ""
    contract = registered.input_schema
    print(
        f"registered {registered.label}{aliases} ({registered.model_kind}, {registered.task}) "
        f"against contract {contract['dataset']}/v{contract['version']}: "
        f"bundle {registered.bundle_uri}"
    )
    return 0


def verify(args: argparse.Namespace, settings: Settings) -> int:
    # pyarrow.dataset loads pandas (over a second) and the bundle reader numpy: only this
    # command needs them.
    from jobs.bundle import mleap_check
    from jobs.bundle.format import read_bundle

    name, _, number = args.name.partition("@")
    if number and not number.isdigit():
        raise PrecomputeError(f"{args.name!r}: write NAME or NAME@VERSION, e.g. churn@3")
    registry = Registry(Database.from_settings(settings))
    if number:
        version = registry.resolve(name, version=int(number))
    else:
        version = registry.resolve(name, alias=args.alias)
    content = bundle_store.load_bytes(version)
    bundle = read_bundle(content)
    schema = version.input_schema
    columns = [schema["entity_id"]["name"], *(f["name"] for f in schema["features"])]
    rows = mleap_check.check_rows(version.training_data, args.input, columns, args.rows)
    rows = mleap_check.with_edge_rows(rows, bundle)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch, "bundle.zip")
        path.write_bytes(content)
        (parity,) = mleap_check.compare([(path, rows)], settings)
    print(f"{version.label} ({version.model_kind}): {parity.summary()}")
    return 0 if parity.agrees else 1
