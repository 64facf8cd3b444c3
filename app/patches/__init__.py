"""Every reach into another library's private internals, in one package, installed once at start.

SwarmDirector touches a dependency's internals only where a measurement or a correctness need
said it must. Each module here is one such touch: its docstring says why, what it measurably buys
(docs/performance.md, section 21) and the library version it was written for, and its
upstream-parity tests (``tests/patches/``, or those it names) hold it to the library's own
behaviour. Three kinds:

- *monkey-patches*, a library's own function replaced, applied by ``install()`` and only by it:
  ``autogen_untraced``;
- *private attributes and methods* used through a small function of the module, so that no other
  code names them: ``autogen_output_queue``, ``autogen_function_tool``, ``autogen_token_usage``, ``autogen_team_id``,
  ``aiosqlite_thread``, ``openai_private``, ``uvicorn_servers``;
- *private imports*, re-exported: ``autogen_ext_private``, ``httpx_proxies``,
  ``sqlalchemy_aiosqlite``.

``install()`` is called by each entry point (the app factory, the test process, the model-client
benchmark), never as an import side effect. Before it patches anything it checks every library
listed in ``PATCHES`` against the versions its module was written for, and refuses to start on
another. ``SWARM_PATCHES_OFF`` is a measuring aid, not a setting: see ``install()``.

This is the bottom layer: it imports no ``app`` module outside itself.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

OFF_VARIABLE = "SWARM_PATCHES_OFF"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Patch:
    """One module of this package: the libraries it touches and the versions it was written for."""

    name: str  # the module, app/patches/<name>.py
    written_for: Mapping[str, tuple[str, ...]]  # distribution -> the versions the module was checked against
    apply: str | None = None  # a monkey-patch: the function of the module that install() calls
    switchable: bool = False  # SWARM_PATCHES_OFF may leave it out (measuring only); the rest are needed


AUTOGEN = ("0.7.5",)
PATCHES: tuple[Patch, ...] = (
    Patch("autogen_untraced", {"autogen-core": AUTOGEN}, apply="skip_unread_telemetry", switchable=True),
    Patch("autogen_output_queue", {"autogen-agentchat": AUTOGEN}),
    Patch("autogen_function_tool", {"autogen-core": AUTOGEN}),
    Patch("autogen_token_usage", {"autogen-agentchat": AUTOGEN}),
    Patch("autogen_team_id", {"autogen-agentchat": AUTOGEN}),
    Patch("autogen_ext_private", {"autogen-ext": AUTOGEN}),
    Patch("openai_private", {"openai": ("2.54.0",)}),
    Patch("httpx_proxies", {"httpx": ("0.28.1",)}),
    Patch("aiosqlite_thread", {"aiosqlite": ("0.22.1",)}, switchable=True),
    Patch("sqlalchemy_aiosqlite", {"sqlalchemy": ("2.1.9",)}),
    Patch("uvicorn_servers", {"uvicorn": ("0.54.0",)}, switchable=True),
)


class PatchVersionError(RuntimeError):
    """A library is installed at a version some patch of this package was not written for."""


class PatchSwitchError(ValueError):
    """``SWARM_PATCHES_OFF`` names a patch that does not exist or cannot be left out."""


_installed = False
_off: frozenset[str] = frozenset()


def install(
    *,
    environ: Mapping[str, str] | None = None,
    version: Callable[[str], str] = importlib.metadata.version,
) -> None:
    """Check every library's version, then apply the monkey-patches (idempotent: once per process).

    ``SWARM_PATCHES_OFF=name,name`` (``environ``, ``os.environ`` by default) leaves switchable
    patches out, to measure what each one buys; it is read here, once. Everything else is there
    for correctness and cannot be left out.
    """
    global _installed, _off
    if _installed:
        return
    check_versions(PATCHES, version)
    off = _switched_off((os.environ if environ is None else environ).get(OFF_VARIABLE, ""))
    if off:
        log.warning("patches switched off (a measuring aid, not for production): %s", ", ".join(sorted(off)))
    for patch in PATCHES:
        if patch.apply is not None and patch.name not in off:
            _apply(patch)
    _off = off
    _installed = True


def _apply(patch: Patch) -> None:
    getattr(importlib.import_module(f"{__name__}.{patch.name}"), str(patch.apply))()


def is_off(name: str) -> bool:
    """Whether ``install()`` was told to leave the patch ``name`` out (``SWARM_PATCHES_OFF``)."""
    return name in _off


def check_versions(patches: tuple[Patch, ...], version: Callable[[str], str] = importlib.metadata.version) -> None:
    """Refuse, naming each library, its installed and expected versions, and what to do."""
    wrong: list[str] = []
    for patch in patches:
        for library, expected in patch.written_for.items():
            try:
                installed = version(library)
            except importlib.metadata.PackageNotFoundError:
                installed = "none"
            if installed not in expected:
                wrong.append(
                    f"- app/patches/{patch.name}.py was written for {library} {' or '.join(expected)}, "
                    f"but {library} {installed} is installed"
                )
    if wrong:
        raise PatchVersionError(
            "SwarmDirector will not start: it patches private internals of libraries whose installed "
            "versions it was not written for.\n"
            + "\n".join(wrong)
            + "\nInstall the pinned versions (`make install`, or `pip install -e .`). To move to a new "
            "version, check each patch named against it (its module's docstring names its tests), then "
            "add the version to the patch's entry in app/patches/__init__.py."
        )


def _switched_off(value: str) -> frozenset[str]:
    names = frozenset(n.strip() for n in value.split(",") if n.strip())
    switchable = {p.name for p in PATCHES if p.switchable}
    if names - switchable:
        raise PatchSwitchError(
            f"{OFF_VARIABLE} names {', '.join(sorted(names - switchable))}: "
            f"only these can be left out: {', '.join(sorted(switchable))}"
        )
    return names
