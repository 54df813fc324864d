"""The `precompute` command: one parser, its commands added by the module that handles them."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from cli import api_commands, database_commands, model_commands, platform_commands, stage_commands
from precompute.commands import run_job
from precompute.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    handler: Callable[[argparse.Namespace, Settings], int] = args.handler
    return run_job(lambda settings: handler(args, settings))


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="precompute", description="Precompute batch scoring platform."
    )
    commands = root.add_subparsers(required=True, metavar="COMMAND")
    for group in (
        database_commands,
        stage_commands,
        api_commands,
        model_commands,
        platform_commands,
    ):
        group.add_to(commands)
    return root


if __name__ == "__main__":
    raise SystemExit(main())
