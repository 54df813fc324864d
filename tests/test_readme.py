"""The README documents what a user can set."""

from __future__ import annotations

from precompute.settings import Settings, project_root


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (project_root() / "README.md").read_text()
    prefix = Settings.model_config.get("env_prefix", "")
    for name, field in Settings.model_fields.items():
        variable = (
            field.validation_alias
            if isinstance(field.validation_alias, str)
            else f"{prefix}{name}".upper()
        )
        assert f"`{variable}`" in readme, f"{variable} is not documented in README.md"
