"""The `precompute` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from precompute import database, migrations
from precompute.errors import PrecomputeError
from precompute.settings import Settings, describe_settings_error, get_settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace, Settings], int] = args.handler
    return run_job(lambda settings: handler(args, settings))


def run_job(job: Callable[[Settings], int]) -> int:
    """Run a command or job with the settings, turning known failures into one-line errors."""
    try:
        return job(get_settings())
    except ValidationError as exc:
        print(f"error: invalid settings:\n{describe_settings_error(exc)}", file=sys.stderr)
        return 2
    except PrecomputeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


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
    url.add_argument("--role", choices=["admin", "writer", "reader"], default="admin")
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
    print(f"database: {database.embedded_server(settings).start()}")
    return 0


def _check_reachable(settings: Settings) -> None:
    url = database.admin_url(settings)
    database.connect(url, hint=database.unreachable_hint(settings)).close()


def _db_stop(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.embedded_database:
        print("DATABASE_URL is set: the project does not manage that server; nothing to stop")
        return 0
    print(f"database: {database.embedded_server(settings).stop()}")
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
    status = database.embedded_server(settings).status()
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


def _settings(args: argparse.Namespace, settings: Settings) -> int:
    for name, value in settings.model_dump().items():
        print(f"{name} = {value}")
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    if settings.embedded_database:
        print(f"database: {database.embedded_server(settings).start()}")
    admin = database.admin_url(settings)
    report = migrations.migrate(admin, settings)
    print(f"migrations: {len(report.applied)} applied now, {len(report.already_applied)} before")
    print()
    print("Database URLs (psql accepts them as they are):")
    for role in ("admin", "writer", "reader"):
        print(f"  {role:<7} {database.database_url(settings, role)}")
    print()
    print("Applied migrations:")
    for applied in migrations.applied_migrations(admin):
        print(
            f"  {applied.version:04d}_{applied.name}.sql  {applied.checksum[:12]}"
            f"  {applied.applied_at}"
        )
    print()
    print("Analyst views (read-only role): analytics.current_predictions, analytics.runs,")
    print("  analytics.model_versions, analytics.run_metrics; try:")
    print(f'  psql "{database.database_url(settings, "reader")}" -c "\\dv+ analytics.*"')
    return 0


def _down(args: argparse.Namespace, settings: Settings) -> int:
    if settings.embedded_database:
        print(f"database: {database.embedded_server(settings).stop()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
