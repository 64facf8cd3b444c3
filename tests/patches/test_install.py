"""``app.patches.install()``: once per process, every monkey-patch applied, and no start on a version a
patch was not written for; ``SWARM_PATCHES_OFF`` leaves switchable ones out."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from autogen_core import SingleThreadedAgentRuntime
from autogen_core._telemetry._tracing import TraceHelper

from app import patches
from app.patches import Patch, PatchSwitchError, PatchVersionError

ROOT = Path(__file__).resolve().parents[2]
applied: list[str] = []

# stand-ins for the package's modules: applying one notes its name
FAKES = (
    Patch("a", {"libone": ("1.0",)}, apply="patch_a", switchable=True),
    Patch("b", {"libone": ("1.0",), "libtwo": ("2.0", "2.1")}, apply="patch_b", switchable=True),
    Patch("c", {"libtwo": ("2.0", "2.1")}),
)
VERSIONS = {"libone": "1.0", "libtwo": "2.1"}


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process where nothing was installed yet, whose patches are the fakes (the real ones stay)."""
    applied.clear()
    monkeypatch.setattr(patches, "_installed", False)
    monkeypatch.setattr(patches, "_off", frozenset())
    monkeypatch.setattr(patches, "PATCHES", FAKES)
    monkeypatch.setattr(patches, "_apply", lambda patch: applied.append(patch.name))


def version(name: str) -> str:
    if name not in VERSIONS:
        raise importlib.metadata.PackageNotFoundError(name)
    return VERSIONS[name]


def test_the_test_process_has_every_monkey_patch_applied() -> None:
    # conftest installed them, as the server's entry points do
    assert SingleThreadedAgentRuntime._try_serialize.__module__ == "app.patches.autogen_untraced"
    assert TraceHelper.trace_block.__module__ == "app.patches.autogen_untraced"
    assert not any(patches.is_off(p.name) for p in patches.PATCHES)


def test_installing_again_changes_nothing() -> None:
    before = TraceHelper.trace_block, SingleThreadedAgentRuntime._try_serialize
    patches.install()
    assert (TraceHelper.trace_block, SingleThreadedAgentRuntime._try_serialize) == before


@pytest.mark.usefixtures("fresh")
def test_install_applies_each_monkey_patch_once() -> None:
    patches.install(environ={}, version=version)
    patches.install(environ={}, version=version)
    assert applied == ["a", "b"]


@pytest.mark.usefixtures("fresh")
def test_a_version_it_was_not_written_for_is_refused_before_anything_is_patched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with monkeypatch.context() as upgraded:
        upgraded.setitem(VERSIONS, "libtwo", "3.0")
        with pytest.raises(PatchVersionError) as refused:
            patches.install(environ={}, version=version)
    message = str(refused.value)
    assert applied == []
    assert "app/patches/b.py was written for libtwo 2.0 or 2.1, but libtwo 3.0 is installed" in message
    assert "app/patches/c.py was written for libtwo 2.0 or 2.1, but libtwo 3.0 is installed" in message
    assert "a.py" not in message  # libone is right
    assert "make install" in message and "app/patches/__init__.py" in message
    patches.install(environ={}, version=version)  # refused, so not installed: a later start still checks
    assert applied == ["a", "b"]


@pytest.mark.usefixtures("fresh")
def test_a_library_not_installed_is_refused() -> None:
    with pytest.raises(PatchVersionError, match=r"written for libone 1\.0, but libone none is installed"):
        patches.install(environ={}, version=lambda name: version(name) if name != "libone" else version("nope"))
    assert applied == []


@pytest.mark.usefixtures("fresh")
def test_the_off_switch_leaves_a_patch_out_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    patches.install(environ={"SWARM_PATCHES_OFF": " b ,"}, version=version)
    assert applied == ["a"]
    assert patches.is_off("b") and not patches.is_off("a") and not patches.is_off("c")
    assert "patches switched off (a measuring aid, not for production): b" in caplog.text


@pytest.mark.usefixtures("fresh")
@pytest.mark.parametrize("value", ["c", "a,nope"])
def test_the_off_switch_refuses_what_cannot_be_left_out(value: str) -> None:
    with pytest.raises(PatchSwitchError, match="only these can be left out: a, b"):
        patches.install(environ={"SWARM_PATCHES_OFF": value}, version=version)
    assert applied == []


def test_every_module_of_the_package_is_listed_with_its_versions() -> None:
    modules = {p.stem for p in (ROOT / "app" / "patches").glob("*.py")} - {"__init__"}
    assert {p.name for p in patches.PATCHES} == modules
    for patch in patches.PATCHES:
        text = (ROOT / "app" / "patches" / f"{patch.name}.py").read_text("utf-8")
        docstring = text.split('"""')[1]
        for library, versions in patch.written_for.items():
            assert all(v in docstring for v in versions), f"{patch.name}'s docstring names no version of {library}"
        if patch.apply is not None:
            assert f"def {patch.apply}(" in text


def test_the_pinned_versions_are_those_the_patches_were_written_for() -> None:
    pins: dict[str, str] = {}
    for requirement in tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", requirement)
        assert match, f"not pinned exactly: {requirement}"
        pins[match[1].lower()] = match[2]
    for patch in patches.PATCHES:
        for library, versions in patch.written_for.items():
            assert pins.get(library) in versions, f"{patch.name}: pyproject pins {library} {pins.get(library)}"
    patches.check_versions(patches.PATCHES)  # and the installed ones too
