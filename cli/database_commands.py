"""`precompute db`: the embedded PostgreSQL server (or DATABASE_URL's) and its schema."""

from __future__ import annotations

import argparse

from cli.parsers import Commands
from local.embedded_pg import embedded_server
from precompute import migrations
from precompute.database import Database, DatabaseUnavailable, admin_url
from precompute.settings import Settings


def add_to(commands: Commands) -> None:
    db = commands.add_parser("db", help="the PostgreSQL server and its schema")
    actions = db.add_subparsers(required=True, metavar="ACTION")
    actions.add_parser("start", help="start the embedded server").set_defaults(handler=start)
    actions.add_parser("stop", help="stop the embedded server").set_defaults(handler=stop)
    actions.add_parser("status", help="is the server up?").set_defaults(handler=status)
    url_command = actions.add_parser("url", help="print a connection URL")
    url_command.add_argument(
        "--role", choices=["admin", "writer", "reader", "api"], default="admin"
    )
    url_command.set_defaults(handler=url)
    actions.add_parser("migrate", help="apply pending migrations from sql/").set_defaults(
        handler=migrate
    )


def start(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.embedded_database:
        Database.from_settings(settings).connect("admin").close()
        print("DATABASE_URL is set: using that server (reachable); nothing to start")
        return 0
    print(f"database: {embedded_server(settings).start()}")
    return 0


def stop(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.embedded_database:
        print("DATABASE_URL is set: the project does not manage that server; nothing to stop")
        return 0
    print(f"database: {embedded_server(settings).stop()}")
    return 0


def status(args: argparse.Namespace, settings: Settings) -> int:
    """Exit 0 when the server answers, 3 when it does not (like pg_ctl status)."""
    if not settings.embedded_database:
        try:
            Database.from_settings(settings).connect("admin").close()
        except DatabaseUnavailable as exc:
            print(f"external: unreachable: {exc}")
            return 3
        print("external: reachable")
        return 0
    state = embedded_server(settings).status()
    print(f"{state.state}: {state.detail}")
    return 0 if state.state == "running" else 3


def url(args: argparse.Namespace, settings: Settings) -> int:
    print(Database.from_settings(settings).url(args.role))
    return 0


def migrate(args: argparse.Namespace, settings: Settings) -> int:
    report = migrations.migrate(admin_url(settings), settings)
    for migration in report.applied:
        print(f"applied {migration.filename}")
    if not report.applied:
        print(f"up to date: {len(report.already_applied)} migrations already applied")
    return 0
