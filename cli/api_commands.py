"""The lookup API as commands: serve it, manage its keys, deliver score-request callbacks."""

from __future__ import annotations

import argparse

from cli.parsers import Commands
from jobs import callbacks
from lookup_api.core import keys
from precompute.database import Database
from precompute.names import READ_SCOPE, SCOPES
from precompute.settings import Settings


def add_to(commands: Commands) -> None:
    api = commands.add_parser("api", help="serve the lookup API (uvicorn)")
    api.add_argument("--host", help="default: PRECOMPUTE_API_HOST")
    api.add_argument("--port", type=int, help="default: PRECOMPUTE_API_PORT")
    api.add_argument("--workers", type=int, help="default: PRECOMPUTE_API_WORKERS")
    api.set_defaults(handler=serve)

    api_key = commands.add_parser("api-key", help="lookup API keys")
    actions = api_key.add_subparsers(required=True, metavar="ACTION")
    create = actions.add_parser("create", help="make a key; it is shown once")
    create.add_argument("name", help="who or what the key is for")
    create.add_argument(
        "--scope",
        action="append",
        choices=SCOPES,
        help=f"repeat for several (default: {READ_SCOPE})",
    )
    create.set_defaults(handler=create_key)
    actions.add_parser("list", help="keys, their scopes and state").set_defaults(handler=list_keys)
    revoke = actions.add_parser("revoke", help="revoke a key by name")
    revoke.add_argument("name")
    revoke.set_defaults(handler=revoke_key)

    requests = commands.add_parser("score-requests", help="asynchronous score requests")
    request_actions = requests.add_subparsers(required=True, metavar="ACTION")
    request_actions.add_parser(
        "deliver", help="post the callbacks that are due (retries with backoff)"
    ).set_defaults(handler=deliver_callbacks)


def serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn  # a third of a second to import: only the serving command pays it

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
    db = Database.from_settings(settings)
    return db.url("writer"), db.hint


def create_key(args: argparse.Namespace, settings: Settings) -> int:
    scopes = tuple(args.scope or [READ_SCOPE])
    key, record = keys.create(*_writer(settings), args.name, scopes)
    print(f"created API key {record.name!r} with {', '.join(record.scopes)}")
    print("the key (shown only now; only its hash is stored):")
    print(key)
    return 0


def list_keys(args: argparse.Namespace, settings: Settings) -> int:
    listed = keys.listing(*_writer(settings))
    if not listed:
        print("no API keys: `precompute api-key create NAME` makes one")
    for k in listed:
        state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
        print(f"{k.name:<24} {k.prefix}…  {','.join(k.scopes):<40} {state}")
    return 0


def revoke_key(args: argparse.Namespace, settings: Settings) -> int:
    record = keys.revoke(*_writer(settings), args.name)
    print(f"revoked {record.name!r} ({record.prefix}…)")
    return 0


def deliver_callbacks(args: argparse.Namespace, settings: Settings) -> int:
    policy = callbacks.CallbackPolicy.from_settings(settings)
    done = callbacks.deliver_due(Database.from_settings(settings), policy)
    print(f"callbacks: {done.delivered} delivered, {done.retrying} to retry, {done.failed} failed")
    return 0
