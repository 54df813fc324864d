"""The type every command module adds its commands to."""

from __future__ import annotations

import argparse
from typing import TypeAlias

# argparse does not export the type of `add_subparsers()`'s result.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
