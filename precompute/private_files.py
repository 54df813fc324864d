"""Files that hold secrets (passwords, API keys) on the local machine."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, text: str) -> None:
    """Write a secret to a file only its owner can read, from the moment it exists: created with
    mode 0600 (never readable by others in between, whatever the umask), and an existing file is
    narrowed to 0600 before the secret goes in."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        os.fchmod(descriptor, 0o600)
        file.write(text)
