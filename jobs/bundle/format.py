"""Reading MLeap Bundle.ML (JSON format) from a zip file, a folder or bytes.

A bundle is `bundle.json` (name, format, MLeap version), a root `pipeline` node whose model lists
its nodes in order, and one `<name>.node/` folder per node holding `model.json` (the op and its
attributes) and `node.json` (input and output column names). A random forest or GBT node holds
one folder per tree; a decision tree keeps its nodes in `tree.json`, one JSON object per line in
pre-order; a booster node (XGBoost, LightGBM) holds its library's model file. This project adds
`precompute.json` (the input contract, classes, training facts); MLeap ignores files it does
not know.
"""

from __future__ import annotations

import io
import json
import posixpath
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from precompute.errors import PrecomputeError

METADATA_FILE = "precompute.json"
SCALAR_TYPES = ("double", "float", "long", "int", "string", "boolean")
# A booster node's model file, by op: MLeap's XGBoost ops' file, and ours for LightGBM.
MODEL_FILES = {
    "xgboost.classifier": "xgboost.model",
    "xgboost.regression": "xgboost.model",
    "lightgbm.classifier": "lightgbm.model",
    "lightgbm.regression": "lightgbm.model",
}


class BundleError(PrecomputeError):
    """A bundle cannot be read, or holds something the runtime does not run."""


@dataclass(frozen=True)
class Port:
    name: str
    port: str


@dataclass(frozen=True)
class Node:
    """One transformer or model: its op, decoded attributes and the columns it reads and writes."""

    name: str
    op: str
    attributes: dict[str, Any]
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    where: str  # the node's folder inside the bundle, for messages
    children: dict[str, Node] = field(default_factory=dict)  # a forest's trees
    tree: tuple[dict[str, Any], ...] | None = None  # a decision tree's nodes, pre-order
    model_file: bytes | None = None  # a booster's model file


@dataclass(frozen=True)
class Bundle:
    name: str
    mleap_version: str
    nodes: tuple[Node, ...]
    metadata: dict[str, Any]  # precompute.json; empty for a bundle from elsewhere


# What reading one file of a bundle raises when it cannot be read: a missing file (KeyError,
# OSError), a wrong checksum (zipfile.BadZipFile), a stream that does not inflate (zlib.error),
# an encrypted entry (RuntimeError), an unknown compression (NotImplementedError).
UNREADABLE_ENTRY = (
    OSError,
    KeyError,
    zipfile.BadZipFile,
    zlib.error,
    RuntimeError,
    NotImplementedError,
)

MAX_ENTRY_BYTES = 256 * 2**20  # one file inside a bundle, uncompressed
MAX_BUNDLE_BYTES = 1024 * 2**20  # all of them


def _check_sizes(archive: zipfile.ZipFile, source: str) -> None:
    """Refuse a zip that would expand past the limits before anything is decompressed (the
    sizes its directory declares are what the reader enforces: zipfile stops at them)."""
    entries = archive.infolist()
    largest = max(entries, key=lambda e: e.file_size, default=None)
    if largest is not None and largest.file_size > MAX_ENTRY_BYTES:
        raise BundleError(
            f"bundle {source}: {largest.filename} expands to {largest.file_size:,} bytes, over "
            f"the {MAX_ENTRY_BYTES:,} a bundle file may hold"
        )
    total = sum(e.file_size for e in entries)
    if total > MAX_BUNDLE_BYTES:
        raise BundleError(
            f"bundle {source} expands to {total:,} bytes, over the {MAX_BUNDLE_BYTES:,} allowed"
        )


def _safe_name(name: Any, what: str, source: str) -> str:
    """A node or tree name from the bundle, used as a folder name: one plain path part."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
        raise BundleError(f"bundle {source}: {what} name {name!r} is not a plain folder name")
    return name


class _Files:
    """Read-only access to the bundle's files, whether zipped or in a folder."""

    def __init__(self, source: str | Path | bytes) -> None:
        self.source = "<bytes>" if isinstance(source, bytes) else str(source)
        self._zip: zipfile.ZipFile | None = None
        self._dir: Path | None = None
        try:
            if isinstance(source, bytes):
                self._zip = zipfile.ZipFile(io.BytesIO(source))
            elif Path(source).is_dir():
                self._dir = Path(source)
            else:
                self._zip = zipfile.ZipFile(source)
        except (OSError, zipfile.BadZipFile) as exc:
            raise BundleError(f"cannot open bundle {self.source}: {exc}") from exc
        if self._zip is not None:
            _check_sizes(self._zip, self.source)

    def exists(self, name: str) -> bool:
        if self._dir is not None:
            return (self._dir / name).is_file()
        assert self._zip is not None
        return name in self._zip.NameToInfo

    def raw(self, name: str) -> bytes:
        try:
            if self._dir is not None:
                return (self._dir / name).read_bytes()
            assert self._zip is not None
            return self._zip.read(name)
        except UNREADABLE_ENTRY as exc:
            raise BundleError(f"bundle {self.source} has no readable {name}: {exc}") from exc

    def text(self, name: str) -> str:
        try:
            return self.raw(name).decode()
        except UnicodeDecodeError as exc:
            raise BundleError(f"bundle {self.source}: {name} is not UTF-8 text: {exc}") from exc

    def json(self, name: str) -> Any:
        try:
            return json.loads(self.text(name))
        except json.JSONDecodeError as exc:
            raise BundleError(f"bundle {self.source}: {name} is not valid JSON: {exc}") from exc


def read_bundle(source: str | Path | bytes) -> Bundle:
    """Parse a Bundle.ML; a malformed file is refused with the file it is in."""
    files = _Files(source)
    info = files.json("bundle.json")
    if info.get("format") != "json":
        raise BundleError(
            f"bundle {files.source} is in {info.get('format')!r} format; only 'json' is supported"
        )
    root = _node(files, "root")
    if root.op != "pipeline":
        raise BundleError(f"bundle {files.source}: the root is a {root.op!r}, not a pipeline")
    names = root.attributes.get("nodes")
    if not isinstance(names, list) or not names:
        raise BundleError(f"bundle {files.source}: the root pipeline lists no nodes")
    nodes = tuple(
        _node(files, f"root/{_safe_name(name, 'node', files.source)}.node") for name in names
    )
    metadata = files.json(METADATA_FILE) if files.exists(METADATA_FILE) else {}
    return Bundle(str(info.get("name", "")), str(info.get("version", "")), nodes, metadata)


def _node(files: _Files, folder: str, with_shape: bool = True) -> Node:
    model = files.json(f"{folder}/model.json")
    shape = files.json(f"{folder}/node.json")["shape"] if with_shape else {}
    op = model.get("op")
    if not isinstance(op, str):
        raise BundleError(f"bundle {files.source}: {folder}/model.json names no op")
    attributes = {
        name: _attribute(value, f"{folder}: attribute {name!r}")
        for name, value in (model.get("attributes") or {}).items()
    }
    children = {}
    if op in (
        "random_forest_classifier",
        "random_forest_regression",
        "gbt_classifier",
        "gbt_regression",
    ):
        for tree in attributes.get("trees") or []:
            children[tree] = _node(
                files, f"{folder}/{_safe_name(tree, 'tree', files.source)}", with_shape=False
            )
    tree_nodes = None
    if op in ("decision_tree_classifier", "decision_tree_regression"):
        lines = files.text(f"{folder}/tree.json").splitlines()
        try:
            tree_nodes = tuple(json.loads(line) for line in lines if line.strip())
        except json.JSONDecodeError as exc:
            raise BundleError(f"bundle {files.source}: {folder}/tree.json: {exc}") from exc
    model_file = files.raw(f"{folder}/{MODEL_FILES[op]}") if op in MODEL_FILES else None
    return Node(
        name=posixpath.basename(folder).removesuffix(".node"),
        op=op,
        attributes=attributes,
        inputs=_ports(shape.get("inputs", []), folder, files),
        outputs=_ports(shape.get("outputs", []), folder, files),
        where=folder,
        children=children,
        tree=tree_nodes,
        model_file=model_file,
    )


def _ports(raw: Any, folder: str, files: _Files) -> tuple[Port, ...]:
    items = [raw] if isinstance(raw, dict) else raw
    try:
        return tuple(Port(str(item["name"]), str(item["port"])) for item in items)
    except (KeyError, TypeError) as exc:
        raise BundleError(f"bundle {files.source}: {folder}/node.json has a bad port") from exc


def _attribute(value: Any, where: str) -> Any:
    """An MLeap attribute as a Python value: scalar, list, or numpy array for a tensor."""
    if not isinstance(value, dict):
        raise BundleError(f"{where} is not an MLeap attribute object")
    kind = value.get("type")
    if "data_shape" in value:
        return value["data_shape"]
    present = [key for key in SCALAR_TYPES if key in value]
    if not present and kind is None and not set(value) - {"type"}:
        # MLeap's JSON writer leaves out a scalar equal to its type's zero (0, 0.0, false,
        # ""), and its reader takes the zero back; 0 reads as each of those in Python.
        return 0
    if len(present) != 1:
        raise BundleError(f"{where} has no single value of a known type ({', '.join(value)})")
    raw = value[present[0]]
    if present[0] == "double":
        # MLeap writes NaN and infinities as null (JSON has neither) and reads null as NaN.
        raw = _nan_for_null(raw)
    if kind == "tensor":
        dims = [int(d["size"]) for d in value.get("shape", {}).get("dimensions", [])]
        array = np.asarray(raw, dtype=np.float64 if present[0] == "double" else None)
        try:
            return array.reshape(dims) if dims else array
        except ValueError as exc:
            raise BundleError(f"{where}: values do not fit the shape {dims}") from exc
    if kind == "list" or kind is None:
        return raw
    raise BundleError(f"{where} has an unknown attribute type {kind!r}")


def _nan_for_null(raw: Any) -> Any:
    if raw is None:
        return float("nan")
    if isinstance(raw, list):
        return [float("nan") if item is None else item for item in raw]
    return raw
