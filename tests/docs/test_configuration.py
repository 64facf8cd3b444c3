"""docs/configuration.md is generated from the settings class; it must be current and complete."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from app.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_doc", ROOT / "scripts" / "gen_config_doc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_configuration_reference_is_current() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == generator().render(), "docs/configuration.md is stale: run `make docs`"


def test_every_setting_is_documented_with_its_variable_and_meaning() -> None:
    text = generator().render()
    for name in Settings.model_fields:
        row = next((line for line in text.splitlines() if f"`SWARM_{name.upper()}`" in line), None)
        assert row is not None, f"SWARM_{name.upper()} is missing"
        meaning = row.rstrip(" |").rsplit("|", 1)[1].strip()
        assert meaning, f"SWARM_{name.upper()} has no description"
