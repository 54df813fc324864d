"""How every command and spark-submit job runs: settings read once, known failures as one line.

The `precompute` command line and each job's own `main` (what spark-submit starts) both run
through here, so the jobs need nothing from the command line's module.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from psycopg2 import errors
from pydantic import ValidationError

from precompute.errors import PrecomputeError
from precompute.settings import Settings, describe_settings_error, get_settings


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
    except (errors.UndefinedTable, errors.UndefinedColumn, errors.UndefinedFunction) as exc:
        # Code newer than the schema it talks to: say how to catch up, not a traceback.
        problem = str(exc).strip().splitlines()[0]
        print(
            f"error: the database schema is older than this code ({problem}): "
            "run `precompute db migrate`",
            file=sys.stderr,
        )
        return 1


def job_main(
    prog: str,
    description: str | None,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace, Settings], int],
    argv: Sequence[str] | None = None,
) -> int:
    """A job's spark-submit entry point: the same arguments as its `precompute` command."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(parser)
    return run_job(lambda settings: run(parser.parse_args(argv), settings))
