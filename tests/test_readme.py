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


def test_the_layout_tree_lists_every_folder_and_only_folders_that_exist() -> None:
    root = project_root()
    section = (root / "README.md").read_text().split("## Layout\n", 1)[1].split("\n## ", 1)[0]
    listed: set[str] = set()
    parent = ""
    for line in section.split("```\n", 2)[1].splitlines():
        if line.startswith("   "):
            continue  # the description of the line above, continued
        name = line.split()[0].rstrip("/")
        if line.startswith("  "):  # a sub-folder of the folder above
            name = f"{parent}/{name}"
        else:
            parent = name
        listed.add(name)
    missing = sorted(name for name in listed if not (root / name).exists())
    assert not missing, f"README's layout lists what does not exist: {missing}"
    top = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    # Sub-packages of the code, but not those of the API's template (api/routes).
    sub = {
        str(init.parent.relative_to(root))
        for init in root.glob("*/*/__init__.py")
        if init.parts[-3] != "tests"
    }
    unlisted = sorted((top | sub) - listed - {"var"})
    assert not unlisted, f"folders missing from README's layout: {unlisted}"
