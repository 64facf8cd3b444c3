"""The client generators the tests run, pinned, installed once per version into a cache outside the repository.

``openapi-python-client`` gets a virtualenv of its own (it pins an older Typer than the server
does, as a CLI tool it is meant to be installed apart); ``openapi-typescript`` and ``typescript``
come from npm into a folder with an exact ``package.json``. The cache is
``$SWARMDIRECTOR_TEST_CACHE`` or ``~/.cache/swarmdirector-tests``; a folder is used only once its install
finished (a marker file), so an interrupted install is redone, not trusted.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PYTHON_GENERATOR = ("openapi-python-client", "0.29.1")
NPM_PACKAGES = {"openapi-typescript": "7.13.0", "typescript": "5.9.3"}
DONE = ".installed"


def cache_dir() -> Path:
    explicit = os.environ.get("SWARMDIRECTOR_TEST_CACHE")
    home_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = Path(explicit) if explicit else home_cache / "swarmdirector-tests"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def _installing(target: Path) -> Iterator[bool]:
    """Yields whether ``target`` must be (re)installed; holds a lock so concurrent runs install once."""
    with open(cache_dir() / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / DONE).exists():
            yield False
            return
        shutil.rmtree(target, ignore_errors=True)
        yield True
        (target / DONE).touch()


def _run(args: list[str], cwd: Path | None = None) -> None:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def python_generator() -> Path:
    """The ``openapi-python-client`` executable's folder (its venv's ``bin``, ruff included)."""
    name, version = PYTHON_GENERATOR
    venv = cache_dir() / f"{name}-{version}"
    with _installing(venv) as needed:
        if needed:
            _run([sys.executable, "-m", "venv", str(venv)])
            _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                  f"{name}=={version}"])  # fmt: skip
    return venv / "bin"


def npm_tools() -> Path:
    """``node_modules/.bin`` with openapi-typescript and tsc; skips the test where node or npm is missing."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.skip(f"the TypeScript client test needs `{tool}` (Node.js 18+) on PATH")
    tag = "-".join(f"{k}-{v}" for k, v in sorted(NPM_PACKAGES.items()))
    folder = cache_dir() / f"npm-{tag}"
    with _installing(folder) as needed:
        if needed:
            folder.mkdir(parents=True)
            manifest = {"name": "swarmdirector-client-tests", "private": True, "dependencies": NPM_PACKAGES}
            (folder / "package.json").write_text(json.dumps(manifest, indent=2))
            _run(["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"], cwd=folder)
    return folder / "node_modules" / ".bin"


def npm_project(source: Path) -> Path:
    """A copy of the npm project in ``source`` (its ``package.json``, ``package-lock.json`` and scripts)
    with its locked packages installed (``npm ci``), in the cache, once per lock file; skips the test
    where node or npm is missing. Scripts are run from the copy, where their imports resolve."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.skip(f"this test needs `{tool}` (Node.js 18+) on PATH")
    lock = (source / "package-lock.json").read_bytes()
    folder = cache_dir() / f"npm-{source.name}-{hashlib.sha256(lock).hexdigest()[:16]}"
    with _installing(folder) as needed:
        if needed:
            folder.mkdir(parents=True)
            for path in source.iterdir():
                if path.is_file():
                    shutil.copy2(path, folder / path.name)
            _run(["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"], cwd=folder)
    for path in source.iterdir():  # the scripts as they are now (the lock decides the packages)
        if path.suffix in (".mjs", ".js"):
            shutil.copy2(path, folder / path.name)
    return folder
