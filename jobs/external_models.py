"""Registering a model made elsewhere: a Bundle.ML (zip or folder) or a booster's model file.

A bundle from the `mleap` package or MLeap on Spark carries no precompute.json. It is checked
against the data contract named (`jobs.bundle_checks`: every problem found, each on its line,
and nothing stored when there is one), then stored as the user's bundle plus a precompute.json
our runtime reads: the contract's input schema, task, model kind (the model op) and class
names. A folder is zipped for storage. An XGBoost or LightGBM model file is first packaged as
a bundle over the contract's features (`jobs.booster_packaging`), then registered the same way.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.booster_packaging import ModelFormat, booster_bundle, detect_format
from jobs.bundle.format import (
    MAX_BUNDLE_BYTES,
    METADATA_FILE,
    UNREADABLE_ENTRY,
    BundleError,
    read_bundle,
)
from jobs.bundle_checks import check_against_contract
from jobs.registration import register
from jobs.registry import ModelVersion, RegistryError, check_name
from precompute.contracts import Contract, load_contract
from precompute.database import Database
from precompute.names import CHALLENGER
from precompute.settings import Settings


class RegistrationRefused(RegistryError):
    """The model cannot score rows of the contract; the message lists every reason."""


@dataclass(frozen=True)
class ExternalModel:
    """What to register: the file or folder, the contract it reads, and how to name it."""

    name: str
    source: Path
    dataset: str
    contract_version: int | None = None
    classes: tuple[str, ...] | None = None
    model_format: ModelFormat | None = None  # None: detected from the file
    aliases: tuple[str, ...] = (CHALLENGER,)
    description: str = ""


def parse_contract_ref(text: str) -> tuple[str, int | None]:
    """`customers` or `customers@2` as (dataset, version or None for the newest)."""
    dataset, at, number = text.partition("@")
    if not dataset or (at and not number.isdigit()):
        raise RegistryError(
            f"contract {text!r}: write DATASET or DATASET@VERSION, e.g. customers@1"
        )
    return dataset, int(number) if at else None


def parse_classes(text: str | None) -> tuple[str, ...] | None:
    """`--classes a,b,c` as a tuple of names; None when not given."""
    if not text:
        return None
    names = tuple(name.strip() for name in text.split(","))
    if not all(names):
        raise RegistryError(f"--classes {text!r}: write names separated by commas, e.g. a,b,c")
    return names


def register_external(db: Database, settings: Settings, request: ExternalModel) -> ModelVersion:
    """Check the model against its contract and register it as the next version, as the module
    docstring says; refuses with every problem named before anything is stored."""
    check_name("model", request.name)
    contract = load_contract(settings.contracts_dir, request.dataset, request.contract_version)
    kind = request.model_format or detect_format(request.source)
    problems: list[str] = []
    checked = None
    if kind == "bundle":
        content: bytes | None = _bundle_bytes(request.source)
    else:
        content, problems = booster_bundle(kind, _read(request.source), contract, request.name)
    if content is not None:
        try:
            bundle = read_bundle(content)
        except BundleError as exc:  # it read bytes: say which file they came from
            hint = ""
            if "no readable bundle.json" in str(exc):
                hint = " (bundle.json must be at the top of the zip, not in a folder inside it)"
            raise BundleError(str(exc).replace("<bytes>", str(request.source)) + hint) from exc
        if bundle.metadata:
            problems.append(
                f"it already holds {METADATA_FILE} (a bundle precompute made): register it "
                "from the registry it came from, or remove that file to register it as new"
            )
        checked = check_against_contract(bundle, contract, request.classes)
        problems += checked.problems
    if problems or checked is None or checked.program is None or content is None:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise RegistrationRefused(
            f"{request.source} cannot be registered as {request.name!r} against contract "
            f"{contract.ref} ({len(problems)} problem{'s' if len(problems) > 1 else ''}):\n{lines}"
        )
    program = checked.program
    metadata = {
        "format": 1,
        "model": request.name,
        "model_kind": program.model_op,
        "task": program.task,
        "classes": list(checked.classes) if checked.classes is not None else None,
        "label": contract.label.name if contract.label is not None else None,
        "input_contract": contract.input_schema(),
        "registered_from": {
            "path": str(request.source),
            "format": kind,
            "sha256": hashlib.sha256(_read(request.source)).hexdigest()
            if request.source.is_file()
            else None,
        },
        "registered_at": datetime.datetime.now(datetime.UTC).isoformat(),
    }
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch, "bundle.zip")
        path.write_bytes(with_metadata(content, metadata, str(request.source)))
        return register(
            db,
            settings.models_root,
            path,
            request.name,
            description=request.description or _describe(contract, kind),
            aliases=request.aliases,
        )


def with_metadata(content: bytes, metadata: dict[str, Any], source: str) -> bytes:
    """The zipped bundle with precompute.json added (MLeap ignores files it does not know);
    every file is copied, so one the runtime never reads must be readable too."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(content)) as bundle,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive,
    ):
        for item in bundle.infolist():
            if item.filename == METADATA_FILE:  # a packaged booster's empty one is replaced
                continue
            try:
                archive.writestr(item, bundle.read(item))
            except UNREADABLE_ENTRY as exc:
                raise BundleError(
                    f"bundle {source} has no readable {item.filename}: {exc}"
                ) from exc
        archive.writestr(METADATA_FILE, json.dumps(metadata, indent=2, sort_keys=True))
    return out.getvalue()


def _bundle_bytes(source: Path) -> bytes:
    """A zipped bundle's bytes; a folder bundle zipped (with `bundle.json` at the top, as
    MLeap writes its zips)."""
    if not source.is_dir():
        return _read(source)
    if not (source / "bundle.json").is_file():
        raise BundleError(f"folder {source} is not a Bundle.ML: it has no bundle.json")
    out = io.BytesIO()
    total = 0
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(source.rglob("*")):
            # A link could store any file the worker can read (a trigger form names the folder).
            if path.is_symlink():
                raise BundleError(f"folder {source} holds a symbolic link, {path}: refused")
            if path.is_file():
                total += path.stat().st_size
                if total > MAX_BUNDLE_BYTES:
                    raise BundleError(
                        f"folder {source} holds over {MAX_BUNDLE_BYTES:,} bytes: not a bundle"
                    )
                archive.write(path, path.relative_to(source).as_posix())
    return out.getvalue()


def _read(source: Path) -> bytes:
    try:
        return source.read_bytes()
    except OSError as exc:
        raise RegistryError(f"cannot read {source}: {exc}") from exc


def _describe(contract: Contract, kind: str) -> str:
    made = "a Bundle.ML" if kind == "bundle" else f"a {kind} model file"
    return f"Registered from {made} against contract {contract.ref}."
