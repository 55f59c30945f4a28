"""The README's settings table and docker/.env.example's settings are generated from the settings
classes (labelclean.settings_doc): they list every setting, and a stale document fails here
(`python -m labelclean.settings_doc --write` brings both up to date)."""

from __future__ import annotations

import re

import pytest

from labelclean.settings import Settings
from labelclean.settings_doc import INTERNAL, documents, main, settings_docs

from .compose import ENV_EXAMPLE, ROOT, read_env_file


def test_readme_and_env_example_are_as_generated() -> None:
    for path, text in documents(ROOT).items():
        assert (ROOT / path).read_text() == text, (
            f"{path} is out of date: python -m labelclean.settings_doc --write"
        )
    assert main(["--check"]) == 0


def test_readme_table_lists_every_setting_once() -> None:
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| `(LABELCLEAN_[A-Z0-9_]+)` \|", readme, re.M)
    assert rows == [f"LABELCLEAN_{name.upper()}" for name in Settings.model_fields]


def test_env_example_has_every_setting_but_the_internal_ones() -> None:
    listed = {k for k in read_env_file(ENV_EXAMPLE) if k.startswith("LABELCLEAN_")}
    expected = {d.variable for d in settings_docs() if d.name not in INTERNAL}
    assert listed == expected
    assert all(f"LABELCLEAN_{n.upper()}" not in listed for n in INTERNAL)


def test_every_setting_is_described() -> None:
    for name, info in Settings.model_fields.items():
        assert info.description and len(info.description) > 10, name


def test_an_empty_variable_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """How compose passes an unset ${LABELCLEAN_X:-} through."""
    for name in Settings.model_fields:
        monkeypatch.setenv(f"LABELCLEAN_{name.upper()}", "")
    assert Settings() == Settings.model_construct()  # every field at its default
    monkeypatch.setenv("LABELCLEAN_PORT", "9000")
    monkeypatch.setenv("LABELCLEAN_DOCS", "false")
    assert (Settings().port, Settings().docs) == (9000, False)
