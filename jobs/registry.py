"""The model registry: versions of each model (one MLeap bundle each) and the aliases on them.

Bundles are copied under the models root as `<model>/v<version>.zip` and registered with their
SHA-256; loading one checks it again, so a file changed after registration is refused. A bundle
is checked against the runtime when it is registered, so an op the runtime cannot run is refused
then, not in the middle of a scoring run. Aliases (`champion`, `challenger`, any name) move in
one transaction; a trigger keeps their history, which rollback reads.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import re
import uuid
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
from psycopg2.extensions import cursor as Cursor
from psycopg2.extras import Json

from jobs.bundle.format import Bundle, BundleError, read_bundle
from jobs.bundle.program import build_program
from precompute import database
from precompute.errors import PrecomputeError
from precompute.names import CHAMPION, NAME_PATTERN
from precompute.settings import Settings

NUMERIC_TYPES = ("long", "double", "boolean")
NAME = re.compile(NAME_PATTERN)


class RegistryError(PrecomputeError):
    """A model, version or alias is not there, or a change to them is refused."""


class BundleTampered(RegistryError):
    """A registered bundle's file no longer matches its checksum."""


@dataclass(frozen=True)
class ModelVersion:
    version_id: int
    model: str
    task: str
    version: int
    model_kind: str
    bundle_uri: str
    bundle_sha256: str
    input_schema: dict[str, Any]
    metrics: dict[str, Any]
    training_data: dict[str, Any] | None
    reference_scores: dict[str, Any] | None
    created_at: datetime.datetime
    aliases: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.model} v{self.version}"


@dataclass(frozen=True)
class ModelSummary:
    name: str
    task: str
    description: str
    versions: int
    aliases: dict[str, int]  # alias -> version number


_VERSION_COLUMNS = """
    v.version_id, m.name, m.task, v.version, v.model_kind, v.bundle_uri, v.bundle_sha256,
    v.input_schema, v.metrics, v.training_data, v.reference_scores, v.created_at,
    coalesce((SELECT array_agg(a.alias ORDER BY a.alias) FROM precompute.model_aliases a
               WHERE a.version_id = v.version_id), '{}')
"""


class Registry:
    def __init__(self, settings: Settings) -> None:
        self.url = database.database_url(settings, "writer")
        self.hint = database.unreachable_hint(settings)
        self.models_root = settings.models_root.rstrip("/")

    def _transaction(self) -> AbstractContextManager[Cursor]:
        return database.transaction(self.url, hint=self.hint)

    # ---- registering ------------------------------------------------------------------------

    def register(
        self,
        bundle_path: Path,
        model: str,
        *,
        description: str = "",
        training_data: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        reference_scores: Mapping[str, Any] | None = None,
        aliases: tuple[str, ...] = (),
    ) -> ModelVersion:
        """Check the bundle, store it as the model's next version and point `aliases` at it."""
        check_name("model", model)
        for alias in aliases:
            check_name("alias", alias)
        try:
            content = bundle_path.read_bytes()
        except OSError as exc:
            raise RegistryError(f"cannot read bundle {bundle_path}: {exc}") from exc
        bundle = read_bundle(content)
        task, kind, schema = _check_registrable(bundle, bundle_path)
        digest = hashlib.sha256(content).hexdigest()
        stored: str | None = None
        try:
            with self._transaction() as cur:
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
                stored = self._store(model, version, content)
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
                    _set_alias(cur, model_id, alias, version_id)
        except Exception:
            if stored is not None:
                _remove(stored)  # the version was not committed; its file must not linger
            raise
        return self.resolve(model, version=version)

    def _store(self, model: str, version: int, content: bytes) -> str:
        uri = f"{self.models_root}/{model}/v{version}.zip"
        fs, path = pafs.FileSystem.from_uri(uri)
        folder = path.rsplit("/", 1)[0]
        partial = f"{folder}/.v{version}-{uuid.uuid4().hex}.partial"
        try:
            fs.create_dir(folder, recursive=True)
            with fs.open_output_stream(partial) as out:
                out.write(content)
            fs.move(partial, path)
        except OSError as exc:
            raise RegistryError(f"cannot store the bundle at {uri}: {exc}") from exc
        return uri

    # ---- reading ----------------------------------------------------------------------------

    def resolve(
        self, model: str, *, alias: str | None = None, version: int | None = None
    ) -> ModelVersion:
        """The version `alias` points at, or version number `version` (champion by default)."""
        if alias is not None and version is not None:
            raise RegistryError("give an alias or a version, not both")
        with self._transaction() as cur:
            self._model_id(cur, model)
            if version is not None:
                cur.execute(
                    f"SELECT {_VERSION_COLUMNS} FROM precompute.model_versions v "
                    "JOIN precompute.models m USING (model_id) "
                    "WHERE m.name = %s AND v.version = %s",
                    (model, version),
                )
                what = f"version {version}"
            else:
                alias = alias or CHAMPION
                cur.execute(
                    f"SELECT {_VERSION_COLUMNS} FROM precompute.model_aliases a "
                    "JOIN precompute.model_versions v USING (version_id) "
                    "JOIN precompute.models m ON m.model_id = a.model_id "
                    "WHERE m.name = %s AND a.alias = %s",
                    (model, alias),
                )
                what = f"alias {alias!r}"
            row = cur.fetchone()
            if row is None:
                known = self._describe_versions(cur, model)
                raise RegistryError(f"model {model!r} has no {what} ({known})")
            return _version(row)

    def versions(self, model: str) -> list[ModelVersion]:
        with self._transaction() as cur:
            self._model_id(cur, model)
            cur.execute(
                f"SELECT {_VERSION_COLUMNS} FROM precompute.model_versions v "
                "JOIN precompute.models m USING (model_id) WHERE m.name = %s ORDER BY v.version",
                (model,),
            )
            return [_version(row) for row in cur.fetchall()]

    def models(self) -> list[ModelSummary]:
        with self._transaction() as cur:
            cur.execute(
                """
                SELECT m.name, m.task, m.description,
                       (SELECT count(*) FROM precompute.model_versions v
                         WHERE v.model_id = m.model_id),
                       coalesce((SELECT jsonb_object_agg(a.alias, v.version)
                                   FROM precompute.model_aliases a
                                   JOIN precompute.model_versions v USING (version_id)
                                  WHERE a.model_id = m.model_id), '{}')
                  FROM precompute.models m ORDER BY m.name
                """
            )
            return [ModelSummary(*row) for row in cur.fetchall()]

    def load(self, version: ModelVersion) -> Bundle:
        """The version's bundle, refused when its file does not match the registered checksum."""
        return read_bundle(self.load_bytes(version))

    def load_bytes(self, version: ModelVersion) -> bytes:
        """The version's bundle file, checked against its registered checksum."""
        try:
            fs, path = pafs.FileSystem.from_uri(version.bundle_uri)
            with fs.open_input_stream(path) as stream:
                content: bytes = stream.readall()
        except (OSError, ValueError) as exc:
            raise RegistryError(
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

    # ---- aliases ----------------------------------------------------------------------------

    def move_aliases(self, model: str, moves: Mapping[str, int | None]) -> None:
        """Point each alias at a version number (None removes it), all in one transaction."""
        for alias in moves:
            check_name("alias", alias)
        with self._transaction() as cur:
            model_id = self._model_id(cur, model, lock=True)
            for alias, version in moves.items():
                if version is None:
                    cur.execute(
                        "DELETE FROM precompute.model_aliases WHERE model_id = %s AND alias = %s",
                        (model_id, alias),
                    )
                    continue
                cur.execute(
                    "SELECT version_id FROM precompute.model_versions "
                    "WHERE model_id = %s AND version = %s",
                    (model_id, version),
                )
                row = cur.fetchone()
                if row is None:
                    raise RegistryError(
                        f"model {model!r} has no version {version} "
                        f"({self._describe_versions(cur, model)}); no alias was moved"
                    )
                _set_alias(cur, model_id, alias, int(row[0]))

    def promote(
        self,
        model: str,
        *,
        version: int | None = None,
        from_alias: str | None = None,
        alias: str = CHAMPION,
    ) -> ModelVersion:
        """Point `alias` at a version number, or at the version `from_alias` points at."""
        if (version is None) == (from_alias is None):
            raise RegistryError("promote needs exactly one of a version or an alias to copy")
        if from_alias is not None:
            version = self.resolve(model, alias=from_alias).version
        self.move_aliases(model, {alias: version})
        return self.resolve(model, alias=alias)

    def rollback(self, model: str, alias: str = CHAMPION) -> tuple[ModelVersion, ModelVersion]:
        """Undo the alias's last move: point it back where it was. Returns (from, to)."""
        current = self.resolve(model, alias=alias)
        with self._transaction() as cur:
            model_id = self._model_id(cur, model, lock=True)
            cur.execute(
                """
                SELECT h.from_version_id, v.version FROM precompute.model_alias_history h
                  LEFT JOIN precompute.model_versions v ON v.version_id = h.from_version_id
                 WHERE h.model_id = %s AND h.alias = %s ORDER BY h.event_id DESC LIMIT 1
                """,
                (model_id, alias),
            )
            row = cur.fetchone()
            if row is None or row[0] is None:
                raise RegistryError(
                    f"alias {alias!r} of {model!r} has only ever pointed at v{current.version}: "
                    "there is nothing to roll back to"
                )
            _set_alias(cur, model_id, alias, int(row[0]))
        return current, self.resolve(model, alias=alias)

    # ---- helpers ----------------------------------------------------------------------------

    def _model_id(self, cur: Cursor, model: str, lock: bool = False) -> int:
        cur.execute(
            "SELECT model_id FROM precompute.models WHERE name = %s"
            + (" FOR UPDATE" if lock else ""),
            (model,),
        )
        row = cur.fetchone()
        if row is None:
            cur.execute("SELECT name FROM precompute.models ORDER BY name")
            names = [r[0] for r in cur.fetchall()] or ["none registered"]
            raise RegistryError(f"no model named {model!r} (models: {', '.join(names)})")
        return int(row[0])

    def _describe_versions(self, cur: Cursor, model: str) -> str:
        cur.execute(
            """
            SELECT v.version, coalesce(string_agg(a.alias, ',' ORDER BY a.alias), '')
              FROM precompute.model_versions v JOIN precompute.models m USING (model_id)
              LEFT JOIN precompute.model_aliases a ON a.version_id = v.version_id
             WHERE m.name = %s GROUP BY v.version ORDER BY v.version
            """,
            (model,),
        )
        rows = cur.fetchall()
        if not rows:
            return "it has no versions"
        return "versions: " + ", ".join(
            f"v{version}" + (f" [{aliases}]" if aliases else "") for version, aliases in rows
        )


def check_name(what: str, name: str) -> None:
    if not NAME.match(name):
        raise RegistryError(
            f"{what} name {name!r} is not allowed: use lower-case letters, digits, _ and -, "
            "starting with a letter, at most 63 characters"
        )


def lock_model_of_version(cur: Cursor, version_id: int) -> None:
    """Take the lock every alias move takes (the model's row), for the version's model: whoever
    else checks "is this version aliased?" and acts on the answer (serving prune) holds it so
    that no promotion lands between the check and the act."""
    cur.execute(
        "SELECT 1 FROM precompute.models m JOIN precompute.model_versions v USING (model_id) "
        "WHERE v.version_id = %s FOR UPDATE OF m",
        (version_id,),
    )


def _set_alias(cur: Cursor, model_id: int, alias: str, version_id: int) -> None:
    cur.execute(
        """
        INSERT INTO precompute.model_aliases (model_id, alias, version_id) VALUES (%s, %s, %s)
        ON CONFLICT (model_id, alias)
        DO UPDATE SET version_id = EXCLUDED.version_id, updated_at = now()
        """,
        (model_id, alias, version_id),
    )


def _version(row: tuple[Any, ...]) -> ModelVersion:
    """A row of _VERSION_COLUMNS: the dataclass's fields in order, aliases last as an array."""
    names = [f.name for f in dataclasses.fields(ModelVersion)]
    return ModelVersion(**dict(zip(names[:-1], row[:-1], strict=True)), aliases=tuple(row[-1]))


def _remove(uri: str) -> None:
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
        fs.delete_file(path)
    except OSError:
        pass  # best effort: an unregistered file is overwritten by the next registration


def _check_registrable(bundle: Bundle, where: Path) -> tuple[str, str, dict[str, Any]]:
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
