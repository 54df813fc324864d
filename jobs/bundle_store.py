"""Registered bundle files: written under the models root as `<model>/v<version>.zip`, and read
back only while they still match the SHA-256 registered with them."""

from __future__ import annotations

import hashlib
import uuid
from typing import TYPE_CHECKING

from precompute.errors import PrecomputeError

if TYPE_CHECKING:
    import pyarrow.fs as pafs

    from jobs.registry import ModelVersion


class BundleStoreError(PrecomputeError):
    """A bundle file cannot be written or read."""


class BundleTampered(BundleStoreError):
    """A registered bundle's file no longer matches its checksum."""


def put(models_root: str, model: str, version: int, content: bytes) -> str:
    """Write the bundle as the model's version; its URI. Written under a temporary name and
    moved into place, so a reader never sees half a file."""
    uri = f"{models_root.rstrip('/')}/{model}/v{version}.zip"
    try:
        fs, path = _filesystem(uri)
        folder = path.rsplit("/", 1)[0]
        partial = f"{folder}/.v{version}-{uuid.uuid4().hex}.partial"
        fs.create_dir(folder, recursive=True)
        with fs.open_output_stream(partial) as out:
            out.write(content)
        fs.move(partial, path)
    except OSError as exc:
        raise BundleStoreError(f"cannot store the bundle at {uri}: {exc}") from exc
    return uri


def remove(uri: str) -> None:
    """Delete a bundle file that was never registered; best effort."""
    try:
        fs, path = _filesystem(uri)
        fs.delete_file(path)
    except OSError:
        pass  # an unregistered file is overwritten by the next registration


def load_bytes(version: ModelVersion) -> bytes:
    """The version's bundle file, refused when it does not match the registered checksum."""
    try:
        fs, path = _filesystem(version.bundle_uri)
        with fs.open_input_stream(path) as stream:
            content: bytes = stream.readall()
    except (OSError, ValueError) as exc:
        raise BundleStoreError(
            f"cannot read the bundle of {version.label} at {version.bundle_uri}: {exc}"
        ) from exc
    found = hashlib.sha256(content).hexdigest()
    if found != version.bundle_sha256:
        raise BundleTampered(
            f"the bundle of {version.label} at {version.bundle_uri} does not match its "
            f"registered checksum (registered {version.bundle_sha256[:12]}…, file "
            f"{found[:12]}…): it changed after registration, so it is refused; restore the "
            "file or register the new bundle as a new version"
        )
    return content


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    # pyarrow is heavy: loaded when a bundle file is first touched, not by every command that
    # only reads the registry's tables.
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(uri)  # type: ignore[no-any-return]
