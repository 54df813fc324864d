"""The model registry on the real database: versions, checksums, aliases, the CLI."""

from __future__ import annotations

import json
import os
import threading
import zipfile
from pathlib import Path
from typing import Any

import pytest
from conftest import export_model, fetch_all, run_cli

from jobs import bundle_store
from jobs.bundle.format import BundleError, read_bundle
from jobs.bundle_store import BundleTampered
from jobs.registration import register
from jobs.registry import ModelVersion, Registry, RegistryError
from jobs.sample_data import customers
from precompute import database
from precompute.database import Database
from precompute.settings import Settings


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("registry-bundles")
    table = customers(1500, seed=5)
    target = table.column("churned").to_numpy(zero_copy_only=False)
    return {
        kind: export_model(folder, kind, table, target, params=params)[1]
        for kind, params in (
            ("logistic_regression", None),
            ("decision_tree", {"max_depth": 4}),
        )
    }


@pytest.fixture
def model(job_settings: Settings, request: pytest.FixtureRequest) -> str:
    """A model name of its own for each test (the jobs database is shared)."""
    name: str = request.node.name
    return "m-" + name.removeprefix("test_")[:40].replace("_", "-")


def add(settings: Settings, bundle: Path, model: str, **kwargs: Any) -> ModelVersion:
    """Register the bundle in the test's database and models root, as `precompute train` does."""
    return register(Database.from_settings(settings), settings.models_root, bundle, model, **kwargs)


def test_registering_stores_the_bundle_and_numbers_versions(
    job_settings: Settings, bundles: dict[str, Path], model: str
) -> None:
    registry = Registry(Database.from_settings(job_settings))
    first = add(
        job_settings,
        bundles["logistic_regression"],
        model,
        metrics={"auc": 0.8},
        training_data={"delta_table": "/lake/t", "table_version": 3},
        aliases=("champion",),
    )
    second = add(job_settings, bundles["decision_tree"], model, aliases=("challenger",))

    assert (first.version, second.version) == (1, 2)
    assert first.aliases == ("champion",) and second.aliases == ("challenger",)
    assert first.model_kind == "logistic_regression" and second.model_kind == "decision_tree"
    assert first.bundle_uri == f"{job_settings.models_root}/{model}/v1.zip"
    assert Path(second.bundle_uri).read_bytes() == bundles["decision_tree"].read_bytes()
    assert first.training_data == {"delta_table": "/lake/t", "table_version": 3}
    assert first.input_schema["entity_id"]["name"] == "customer_id"
    assert registry.resolve(model).version == 1  # champion by default
    assert registry.resolve(model, alias="challenger").version == 2
    stored = read_bundle(bundle_store.load_bytes(first))
    assert stored.metadata["model_kind"] == "logistic_regression"


def test_a_tampered_bundle_is_refused_at_load(
    job_settings: Settings, bundles: dict[str, Path], model: str
) -> None:
    version = add(job_settings, bundles["logistic_regression"], model)
    stored = Path(version.bundle_uri)
    content = bytearray(stored.read_bytes())
    content[len(content) // 2] ^= 0xFF
    stored.write_bytes(bytes(content))

    with pytest.raises(BundleTampered, match=r"does not match its registered checksum"):
        bundle_store.load_bytes(version)


def test_an_unsupported_op_is_refused_at_registration_and_nothing_is_stored(
    job_settings: Settings, bundles: dict[str, Path], model: str, tmp_path: Path
) -> None:
    edited = tmp_path / "unsupported.zip"
    with (
        zipfile.ZipFile(bundles["logistic_regression"]) as source,
        zipfile.ZipFile(edited, "w") as out,
    ):
        for item in source.infolist():
            data = source.read(item)
            if item.filename.endswith("model.json") and b'"standard_scaler"' in data:
                data = json.dumps(json.loads(data) | {"op": "min_hash_lsh"}).encode()
            out.writestr(item, data)

    with pytest.raises(BundleError, match="uses op 'min_hash_lsh'"):
        add(job_settings, edited, model)
    assert not (Path(job_settings.models_root) / model).exists()
    rows = fetch_all(
        database.admin_url(job_settings), "SELECT 1 FROM precompute.models WHERE name = %s", [model]
    )
    assert rows == []


def test_aliases_move_in_one_transaction(
    job_settings: Settings, bundles: dict[str, Path], model: str
) -> None:
    registry = Registry(Database.from_settings(job_settings))
    add(job_settings, bundles["logistic_regression"], model, aliases=("champion", "challenger"))
    add(job_settings, bundles["decision_tree"], model)

    # One move names a version that does not exist: neither alias may move.
    with pytest.raises(RegistryError, match=r"has no version 9.*no alias was moved"):
        registry.move_aliases(model, {"champion": 2, "challenger": 9})
    assert registry.resolve(model).version == 1
    assert registry.resolve(model, alias="challenger").version == 1

    registry.move_aliases(model, {"champion": 2, "challenger": None})
    assert registry.resolve(model).version == 2
    with pytest.raises(RegistryError, match="has no alias 'challenger'"):
        registry.resolve(model, alias="challenger")


def test_a_reader_sees_the_old_or_the_new_aliases_never_a_mix(
    job_settings: Settings, bundles: dict[str, Path], model: str
) -> None:
    registry = Registry(Database.from_settings(job_settings))
    add(job_settings, bundles["logistic_regression"], model, aliases=("champion", "shadow"))
    add(job_settings, bundles["decision_tree"], model)
    reader = database.database_url(job_settings, "reader")
    seen: set[tuple[Any, ...]] = set()
    done = threading.Event()

    def poll() -> None:
        conn = database.connect(reader)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                while not done.is_set():
                    cur.execute(
                        "SELECT array_agg(v.version ORDER BY a.alias)"
                        " FROM precompute.model_aliases a"
                        " JOIN precompute.model_versions v USING (version_id)"
                        " JOIN precompute.models m ON m.model_id = a.model_id WHERE m.name = %s",
                        (model,),
                    )
                    seen.add(tuple(cur.fetchone()[0]))
        finally:
            conn.close()

    thread = threading.Thread(target=poll)
    thread.start()
    try:
        for _ in range(30):
            registry.move_aliases(model, {"champion": 2, "shadow": 2})
            registry.move_aliases(model, {"champion": 1, "shadow": 1})
    finally:
        done.set()
        thread.join()
    assert seen <= {(1, 1), (2, 2)}, seen
    assert len(seen) == 2


def test_promote_and_rollback(job_settings: Settings, bundles: dict[str, Path], model: str) -> None:
    registry = Registry(Database.from_settings(job_settings))
    add(job_settings, bundles["logistic_regression"], model, aliases=("champion",))
    add(job_settings, bundles["decision_tree"], model, aliases=("challenger",))

    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback(model)
    assert registry.promote(model, from_alias="challenger").version == 2
    before, after = registry.rollback(model)
    assert (before.version, after.version) == (2, 1)
    assert registry.resolve(model).version == 1
    with pytest.raises(RegistryError, match=r"no version 7 \(versions: v1 \[champion\], v2"):
        registry.promote(model, version=7)
    with pytest.raises(RegistryError, match="no model named 'nope'"):
        registry.resolve("nope")
    with pytest.raises(RegistryError, match="alias name 'Bad Alias' is not allowed"):
        registry.promote(model, version=1, alias="Bad Alias")


def test_model_commands_on_the_command_line(
    job_settings: Settings, bundles: dict[str, Path], model: str
) -> None:
    add(job_settings, bundles["logistic_regression"], model, aliases=("champion",))
    add(job_settings, bundles["decision_tree"], model, metrics={"auc": 0.75})
    env = os.environ | {
        "DATABASE_URL": job_settings.database_url.get_secret_value(),  # type: ignore[union-attr]
        "PRECOMPUTE_MODELS_ROOT": job_settings.models_root,
    }

    listed = run_cli("model", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert any(
        line.split()[:4] == [model, "classification", "2", "champion=v1"]
        for line in listed.stdout.splitlines()
    )
    promoted = run_cli("model", "promote", model, "--version", "2", env=env)
    assert promoted.returncode == 0 and f"champion -> {model} v2" in promoted.stdout
    shown = run_cli("model", "show", model, env=env)
    assert "v2  [champion]  decision_tree  auc=0.7500" in shown.stdout
    rolled = run_cli("model", "rollback", model, env=env)
    assert f"champion: {model} v2 -> {model} v1" in rolled.stdout
    missing = run_cli("model", "promote", model, "--version", "5", env=env)
    assert missing.returncode == 1
    assert missing.stderr.startswith(f"error: model {model!r} has no version 5")
