"""Dataset contracts: the repository's contracts load, and a broken one says what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.feature_drift import Thresholds, thresholds_for
from precompute.contracts import ContractError, load_contract, parse_contract
from precompute.settings import Settings

VALID = """
name = "things"
version = 1
[entity_id]
name = "thing_id"
type = "string"
nullable = false
[[features]]
name = "size"
type = "double"
"""


def write(folder: Path, text: str, name: str = "things", version: int = 1) -> Path:
    path = folder / name / f"v{version}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_sample_contract_loads(settings: Settings) -> None:
    contract = load_contract(settings.contracts_dir, "customers")
    assert contract.ref == "customers/v1"
    assert contract.entity_id.name == "customer_id"
    assert [c.name for c in contract.columns][-1] == "updated_at"


def test_the_newest_version_is_the_default(tmp_path: Path) -> None:
    write(tmp_path, VALID)
    write(tmp_path, VALID.replace("version = 1", "version = 2"), version=2)
    assert load_contract(tmp_path, "things").version == 2
    assert load_contract(tmp_path, "things", 1).version == 1


def test_an_unknown_contract_lists_the_available_ones(tmp_path: Path) -> None:
    write(tmp_path, VALID)
    with pytest.raises(ContractError, match=r"no contract named 'other'.*available: things"):
        load_contract(tmp_path, "other")


def test_a_missing_version_lists_the_versions(tmp_path: Path) -> None:
    write(tmp_path, VALID)
    with pytest.raises(ContractError, match=r"no version 3.*versions: 1"):
        load_contract(tmp_path, "things", 3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('type = "double"', 'type = "double"\nmin = 5\nmax = 1'), "min 5.0 is above max 1.0"),
        (('type = "double"', 'type = "double"\nallowed = ["a"]'), "allowed values apply"),
        (("nullable = false", "nullable = true"), "entity_id cannot be nullable"),
        (('name = "size"', 'name = "batch_id"'), "reserved for ingest"),
        (('name = "size"', 'name = "thing_id"'), "columns declared twice: thing_id"),
        (('type = "double"', 'type = "decimal"'), "features.0.type"),
        (('name = "size"', 'name = "_size"'), "features.0.name"),
        (
            ('type = "double"', 'type = "double"\ndrift = { warn = 0.5, fail = 0.2 }'),
            "above drift.fail",
        ),
        (('type = "double"', 'type = "double"\ndrift = { psi = 0.5 }'), "features.0.drift.psi"),
    ],
)
def test_an_invalid_contract_names_the_problem(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    path = write(tmp_path, VALID.replace(*change))
    with pytest.raises(ContractError, match=message) as error:
        parse_contract(path)
    assert str(path) in str(error.value)


def test_a_contract_must_sit_where_its_name_and_version_say(tmp_path: Path) -> None:
    write(tmp_path, VALID, version=2)
    with pytest.raises(ContractError, match="declares things/v1 but its place says things/v2"):
        load_contract(tmp_path, "things", 2)


def test_a_columns_drift_thresholds_override_the_settings(
    tmp_path: Path, settings: Settings
) -> None:
    text = VALID.replace(
        'type = "double"', 'type = "double"\ndrift = { fail = 0.5, missing_warn = 0.1 }'
    )
    text += '[[features]]\nname = "colour"\ntype = "string"\n'
    contract = parse_contract(write(tmp_path, text))
    defaults = settings.model_copy(
        update={
            "drift_warn_psi": 0.1,
            "drift_fail_psi": 0.25,
            "drift_warn_missing": 0.05,
            "drift_fail_missing": 0.2,
        }
    )
    assert thresholds_for(defaults, contract) == {
        "size": Thresholds(warn=0.1, fail=0.5, missing_warn=0.1, missing_fail=0.2),
        "colour": Thresholds(warn=0.1, fail=0.25, missing_warn=0.05, missing_fail=0.2),
    }
