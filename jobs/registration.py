"""Registering a bundle as a model's next version: checked, stored, recorded with its checksum.

The bundle is checked against the runtime when it is registered (an op it cannot run is refused
by name), and against the input contract it records (every column it reads declared, with a
type that fits), so a bundle that could not score is refused now, not in the middle of a
scoring run. The file is stored under the models root before its version row commits, and
removed again when the row does not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from psycopg2.extras import Json

from jobs import bundle_store
from jobs.bundle.format import Bundle, BundleError, read_bundle
from jobs.bundle.program import build_program
from jobs.registry import ModelVersion, Registry, RegistryError, check_name, set_alias
from precompute.database import Database

NUMERIC_TYPES = ("long", "double", "boolean")


def register(
    db: Database,
    models_root: str,
    bundle_path: Path,
    model: str,
    *,
    description: str = "",
    training_data: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    reference_scores: Mapping[str, Any] | None = None,
    aliases: tuple[str, ...] = (),
) -> ModelVersion:
    """Check the bundle, store it under `models_root` as the model's next version and point
    `aliases` at it."""
    check_name("model", model)
    for alias in aliases:
        check_name("alias", alias)
    try:
        content = bundle_path.read_bytes()
    except OSError as exc:
        raise RegistryError(f"cannot read bundle {bundle_path}: {exc}") from exc
    task, kind, schema = registrable(read_bundle(content), bundle_path)
    digest = hashlib.sha256(content).hexdigest()
    stored: str | None = None
    try:
        with db.transaction("writer") as cur:
            cur.execute(
                """
                INSERT INTO precompute.models (name, task, description) VALUES (%s, %s, %s)
                ON CONFLICT (name) DO NOTHING
                """,
                (model, task, description),
            )
            # The row lock serialises registrations of one model, so versions do not clash.
            cur.execute(
                "SELECT model_id, task FROM precompute.models WHERE name = %s FOR UPDATE",
                (model,),
            )
            model_id, existing_task = cur.fetchone()
            if existing_task != task:
                raise RegistryError(
                    f"model {model!r} does {existing_task}; this bundle does {task}: "
                    "register it under another name"
                )
            cur.execute(
                "SELECT coalesce(max(version), 0) + 1 FROM precompute.model_versions "
                "WHERE model_id = %s",
                (model_id,),
            )
            version = int(cur.fetchone()[0])
            stored = bundle_store.put(models_root, model, version, content)
            cur.execute(
                """
                INSERT INTO precompute.model_versions
                    (model_id, version, model_kind, bundle_uri, bundle_sha256, input_schema,
                     metrics, training_data, reference_scores)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
                RETURNING version_id
                """,
                (
                    model_id,
                    version,
                    kind,
                    stored,
                    digest,
                    Json(schema),
                    Json(dict(metrics or {})),
                    Json(dict(training_data)) if training_data is not None else None,
                    Json(dict(reference_scores)) if reference_scores is not None else None,
                ),
            )
            version_id = int(cur.fetchone()[0])
            for alias in aliases:
                set_alias(cur, model_id, alias, version_id)
    except Exception:
        if stored is not None:
            bundle_store.remove(stored)  # the version was not committed; its file must not linger
        raise
    return Registry(db).resolve(model, version=version)


def registrable(bundle: Bundle, where: Path) -> tuple[str, str, dict[str, Any]]:
    """The bundle runs on the runtime and says what it reads: (task, model kind, input schema)."""
    program = build_program(bundle)  # refuses an unsupported op or attribute, by name
    meta = bundle.metadata
    contract = meta.get("input_contract")
    if not isinstance(contract, dict) or "features" not in contract or "entity_id" not in contract:
        raise BundleError(
            f"bundle {where} records no input contract (precompute.json input_contract): "
            "train it with `precompute train`, which records one"
        )
    declared = {f["name"]: f["type"] for f in contract["features"]}
    for column in program.inputs:
        if column.name not in declared:
            raise BundleError(
                f"bundle {where} reads {column.name!r}, which its input contract does not declare"
            )
        fits = (
            declared[column.name] == "string"
            if column.kind == "string"
            else (declared[column.name] in NUMERIC_TYPES)
        )
        if not fits:
            raise BundleError(
                f"bundle {where} reads {column.name!r} as {column.kind}, but the contract "
                f"declares it {declared[column.name]}"
            )
    recorded_task = meta.get("task", program.task)
    if recorded_task != program.task:
        raise BundleError(
            f"bundle {where} says it does {recorded_task}, but its model op {program.model_op} "
            f"does {program.task}"
        )
    return program.task, str(meta.get("model_kind", program.model_op)), contract
