"""The model registry's tables: the versions of each model and the aliases on them.

A version is a registered MLeap bundle (`jobs.registration` checks and records one; its file is
kept by `jobs.bundle_store`). Aliases (`champion`, `challenger`, any name) move in one
transaction; a trigger keeps their history, which rollback reads.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from psycopg2.extensions import cursor as Cursor

from precompute.database import Database
from precompute.errors import PrecomputeError
from precompute.names import CHAMPION, NAME_PATTERN

NAME = re.compile(NAME_PATTERN)


class RegistryError(PrecomputeError):
    """A model, version or alias is not there, or a change to them is refused."""


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
    """Reads the registered versions and moves aliases, as the writer role."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _transaction(self) -> AbstractContextManager[Cursor]:
        return self.db.transaction("writer")

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
                set_alias(cur, model_id, alias, int(row[0]))

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
            set_alias(cur, model_id, alias, int(row[0]))
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


def set_alias(cur: Cursor, model_id: int, alias: str, version_id: int) -> None:
    """Point the alias at the version, in the caller's transaction (the trigger logs it)."""
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
