"""The `precompute` command line."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from local.embedded_pg import embedded_server
from precompute import database, migrations
from precompute.commands import run_job
from precompute.errors import PrecomputeError
from precompute.names import CHAMPION, READ_SCOPE, SCOPES
from precompute.settings import Settings, printable


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace, Settings], int] = args.handler
    return run_job(lambda settings: handler(args, settings))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="precompute", description="Precompute batch scoring platform."
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    db = commands.add_parser("db", help="the PostgreSQL server and its schema")
    db_commands = db.add_subparsers(required=True, metavar="ACTION")
    db_commands.add_parser("start", help="start the embedded server").set_defaults(
        handler=_db_start
    )
    db_commands.add_parser("stop", help="stop the embedded server").set_defaults(handler=_db_stop)
    db_commands.add_parser("status", help="is the server up?").set_defaults(handler=_db_status)
    url = db_commands.add_parser("url", help="print a connection URL")
    url.add_argument("--role", choices=["admin", "writer", "reader", "api"], default="admin")
    url.set_defaults(handler=_db_url)
    db_commands.add_parser("migrate", help="apply pending migrations from sql/").set_defaults(
        handler=_db_migrate
    )

    ingest = commands.add_parser(
        "ingest", help="validate a batch into the incoming and quarantine Delta tables"
    )
    from jobs import ingest as ingest_job

    ingest_job.add_arguments(ingest)
    ingest.set_defaults(handler=_ingest)

    train = commands.add_parser(
        "train", help="train a model on labelled data and register it as a new version"
    )
    from jobs import train as train_job

    train_job.add_arguments(train)
    train.set_defaults(handler=_train)

    score = commands.add_parser(
        "score", help="score a batch (or every entity) into the Delta predictions history"
    )
    from jobs import score as score_job

    score_job.add_arguments(score)
    score.set_defaults(handler=_score)

    publish = commands.add_parser(
        "publish", help="publish a scored run's predictions to PostgreSQL, atomically"
    )
    from jobs import publish as publish_job

    publish_job.add_arguments(publish)
    publish.set_defaults(handler=_publish)

    serving = commands.add_parser("serving", help="the PostgreSQL serving tables")
    serving_commands = serving.add_subparsers(required=True, metavar="ACTION")
    prune = serving_commands.add_parser(
        "prune",
        help="remove served versions beyond PRECOMPUTE_SERVING_VERSIONS_KEPT per model",
    )
    prune.add_argument("--keep", type=int, help="versions to keep per model (default: the setting)")
    prune.set_defaults(handler=_serving_prune)

    commands.add_parser(
        "maintenance", help="compact and vacuum the Delta tables; drop old run records"
    ).set_defaults(handler=_maintenance)

    api = commands.add_parser("api", help="serve the lookup API (uvicorn)")
    api.add_argument("--host", help="default: PRECOMPUTE_API_HOST")
    api.add_argument("--port", type=int, help="default: PRECOMPUTE_API_PORT")
    api.add_argument("--workers", type=int, help="default: PRECOMPUTE_API_WORKERS")
    api.set_defaults(handler=_api)

    api_key = commands.add_parser("api-key", help="lookup API keys")
    key_commands = api_key.add_subparsers(required=True, metavar="ACTION")
    create = key_commands.add_parser("create", help="make a key; it is shown once")
    create.add_argument("name", help="who or what the key is for")
    create.add_argument(
        "--scope",
        action="append",
        choices=SCOPES,
        help=f"repeat for several (default: {READ_SCOPE})",
    )
    create.set_defaults(handler=_api_key_create)
    key_commands.add_parser("list", help="keys, their scopes and state").set_defaults(
        handler=_api_key_list
    )
    revoke = key_commands.add_parser("revoke", help="revoke a key by name")
    revoke.add_argument("name")
    revoke.set_defaults(handler=_api_key_revoke)

    requests = commands.add_parser("score-requests", help="asynchronous score requests")
    request_commands = requests.add_subparsers(required=True, metavar="ACTION")
    request_commands.add_parser(
        "deliver", help="post the callbacks that are due (retries with backoff)"
    ).set_defaults(handler=_deliver_callbacks)

    model = commands.add_parser("model", help="the model registry: versions and aliases")
    model_commands = model.add_subparsers(required=True, metavar="ACTION")
    model_commands.add_parser("list", help="models, version counts and aliases").set_defaults(
        handler=_model_list
    )
    show = model_commands.add_parser("show", help="a model's versions, metrics and aliases")
    show.add_argument("name")
    show.set_defaults(handler=_model_show)
    promote = model_commands.add_parser(
        "promote", help="point an alias (champion by default) at a version"
    )
    promote.add_argument("name")
    target = promote.add_mutually_exclusive_group(required=True)
    target.add_argument("--version", type=int, help="version number to promote")
    target.add_argument("--from-alias", help="promote the version this alias points at")
    promote.add_argument("--alias", default=CHAMPION, help=f"alias to move (default: {CHAMPION})")
    promote.set_defaults(handler=_model_promote)
    rollback = model_commands.add_parser(
        "rollback", help="undo an alias's last move (champion by default)"
    )
    rollback.add_argument("name")
    rollback.add_argument("--alias", default=CHAMPION)
    rollback.set_defaults(handler=_model_rollback)

    verify = model_commands.add_parser(
        "verify", help="score a version with MLeap's own runtime and ours; they must agree"
    )
    verify.add_argument("name", metavar="NAME[@VERSION]", help="model, optionally @version")
    verify.add_argument("--alias", default=CHAMPION, help=f"without @VERSION (default: {CHAMPION})")
    verify.add_argument("--input", help="rows to check on (default: its training data)")
    verify.add_argument("--rows", type=int, default=2000, help="rows to check (default: 2000)")
    verify.set_defaults(handler=_model_verify)

    commands.add_parser("settings", help="print the effective settings").set_defaults(
        handler=_settings
    )
    commands.add_parser("demo", help="run the main job on the embedded defaults").set_defaults(
        handler=_demo
    )
    commands.add_parser("down", help="stop everything the project started").set_defaults(
        handler=_down
    )
    return parser


def _db_start(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.embedded_database:
        _check_reachable(settings)
        print("DATABASE_URL is set: using that server (reachable); nothing to start")
        return 0
    print(f"database: {embedded_server(settings).start()}")
    return 0


def _check_reachable(settings: Settings) -> None:
    url = database.admin_url(settings)
    database.connect(url, hint=database.unreachable_hint(settings)).close()


def _db_stop(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.embedded_database:
        print("DATABASE_URL is set: the project does not manage that server; nothing to stop")
        return 0
    print(f"database: {embedded_server(settings).stop()}")
    return 0


def _db_status(args: argparse.Namespace, settings: Settings) -> int:
    """Exit 0 when the server answers, 3 when it does not (like pg_ctl status)."""
    if not settings.embedded_database:
        try:
            _check_reachable(settings)
        except database.DatabaseUnavailable as exc:
            print(f"external: unreachable: {exc}")
            return 3
        print("external: reachable")
        return 0
    status = embedded_server(settings).status()
    print(f"{status.state}: {status.detail}")
    return 0 if status.state == "running" else 3


def _db_url(args: argparse.Namespace, settings: Settings) -> int:
    print(database.database_url(settings, args.role))
    return 0


def _db_migrate(args: argparse.Namespace, settings: Settings) -> int:
    report = migrations.migrate(database.admin_url(settings), settings)
    for migration in report.applied:
        print(f"applied {migration.filename}")
    if not report.applied:
        print(f"up to date: {len(report.already_applied)} migrations already applied")
    return 0


def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    from jobs import ingest

    return ingest.run(args, settings)


def _train(args: argparse.Namespace, settings: Settings) -> int:
    from jobs import train

    return train.run(args, settings)


def _score(args: argparse.Namespace, settings: Settings) -> int:
    from jobs import score

    return score.run(args, settings)


def _publish(args: argparse.Namespace, settings: Settings) -> int:
    from jobs import publish

    return publish.run(args, settings)


def _serving_prune(args: argparse.Namespace, settings: Settings) -> int:
    from jobs import serving

    keep = settings.serving_versions_kept if args.keep is None else args.keep
    if keep < 1:
        raise PrecomputeError("--keep must be at least 1")
    url = database.database_url(settings, "writer")
    removed = serving.prune(url, database.unreachable_hint(settings), keep)
    for r in removed:
        print(f"removed {r.model} v{r.version} from serving ({r.rows} predictions)")
    if not removed:
        print(f"nothing to remove: no model serves more than {keep} versions")
    return 0


def _maintenance(args: argparse.Namespace, settings: Settings) -> int:
    from jobs import maintenance

    return maintenance.run(args, settings)


def _api(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    uvicorn.run(
        "lookup_api.main:create_app",
        factory=True,
        host=args.host or settings.api_host,
        port=args.port or settings.api_port,
        workers=args.workers or settings.api_workers,
        access_log=False,  # the app logs each request as one JSON line
        log_level="warning",
    )
    return 0


def _writer(settings: Settings) -> tuple[str, str]:
    return database.database_url(settings, "writer"), database.unreachable_hint(settings)


def _api_key_create(args: argparse.Namespace, settings: Settings) -> int:
    from lookup_api.core import keys

    scopes = tuple(args.scope or [keys.READ])
    key, record = keys.create(*_writer(settings), args.name, scopes)
    print(f"created API key {record.name!r} with {', '.join(record.scopes)}")
    print("the key (shown only now; only its hash is stored):")
    print(key)
    return 0


def _api_key_list(args: argparse.Namespace, settings: Settings) -> int:
    from lookup_api.core import keys

    listed = keys.listing(*_writer(settings))
    if not listed:
        print("no API keys: `precompute api-key create NAME` makes one")
    for k in listed:
        state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
        print(f"{k.name:<24} {k.prefix}…  {','.join(k.scopes):<40} {state}")
    return 0


def _api_key_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from lookup_api.core import keys

    record = keys.revoke(*_writer(settings), args.name)
    print(f"revoked {record.name!r} ({record.prefix}…)")
    return 0


def _deliver_callbacks(args: argparse.Namespace, settings: Settings) -> int:
    from jobs import callbacks

    db = database.Database.from_settings(settings)
    done = callbacks.deliver_due(db, callbacks.CallbackPolicy.from_settings(settings))
    print(f"callbacks: {done.delivered} delivered, {done.retrying} to retry, {done.failed} failed")
    return 0


def _model_list(args: argparse.Namespace, settings: Settings) -> int:
    from jobs.registry import Registry

    models = Registry(database.Database.from_settings(settings)).models()
    if not models:
        print("no models registered yet: `precompute train` registers one")
        return 0
    print(f"{'MODEL':<24} {'TASK':<15} {'VERSIONS':>8}  ALIASES")
    for m in models:
        aliases = ", ".join(f"{a}=v{v}" for a, v in sorted(m.aliases.items())) or "-"
        print(f"{m.name:<24} {m.task:<15} {m.versions:>8}  {aliases}")
    return 0


def _model_show(args: argparse.Namespace, settings: Settings) -> int:
    from jobs.registry import Registry

    for v in Registry(database.Database.from_settings(settings)).versions(args.name):
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


def _model_promote(args: argparse.Namespace, settings: Settings) -> int:
    from jobs.registry import Registry

    db = database.Database.from_settings(settings)
    version = Registry(db).promote(
        args.name, version=args.version, from_alias=args.from_alias, alias=args.alias
    )
    print(f"{args.alias} -> {version.label} (id {version.version_id})")
    served = db.fetch(
        "writer",
        "SELECT 1 FROM precompute.serving_versions WHERE model_version_id = %s",
        (version.version_id,),
    )
    if not served:
        print(
            f"note: {version.label} serves no predictions yet: lookups through {args.alias!r} "
            "answer 404 until a run publishes some (the rescore DAG scores every entity)"
        )
    return 0


def _model_rollback(args: argparse.Namespace, settings: Settings) -> int:
    from jobs.registry import Registry

    before, after = Registry(database.Database.from_settings(settings)).rollback(
        args.name, alias=args.alias
    )
    print(f"{args.alias}: {before.label} -> {after.label}")
    return 0


def _model_verify(args: argparse.Namespace, settings: Settings) -> int:
    import tempfile
    from pathlib import Path

    from jobs import bundle_store
    from jobs.bundle import mleap_check
    from jobs.bundle.format import read_bundle
    from jobs.registry import Registry

    name, _, number = args.name.partition("@")
    if number and not number.isdigit():
        raise PrecomputeError(f"{args.name!r}: write NAME or NAME@VERSION, e.g. churn@3")
    registry = Registry(database.Database.from_settings(settings))
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


def _settings(args: argparse.Namespace, settings: Settings) -> int:
    for name, value in printable(settings).items():
        print(f"{name} = {value}")
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from local import demo

    return demo.run(settings)


def _down(args: argparse.Namespace, settings: Settings) -> int:
    from local.processes import service

    for name in ("lookup-api", "airflow"):
        print(f"{name}: {service(settings, name).stop()}")
    if settings.embedded_database:
        print(f"database: {embedded_server(settings).stop()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
