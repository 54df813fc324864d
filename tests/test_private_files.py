"""Secrets written to local files are never readable by others, not even for a moment."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from precompute.private_files import write_private


def test_a_new_file_is_created_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "admin-password"
    previous = os.umask(0)  # the most permissive umask: only the mode given at creation holds
    try:
        write_private(path, "s3cret\n")
    finally:
        os.umask(previous)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "s3cret\n"


def test_an_existing_readable_file_ends_owner_only_with_the_new_secret(tmp_path: Path) -> None:
    path = tmp_path / "api-key"
    path.write_text("old")
    path.chmod(0o644)

    write_private(path, "new-key")

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "new-key"
