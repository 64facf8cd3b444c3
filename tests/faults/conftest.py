"""A throw-away PostgreSQL database on 127.0.0.1:5432 that a test can take away and give back; and
servers of a test's own (``own_redis``, ``own_postgres``) that it may kill and restart, since the
shared ones must never be stopped.

Skips where PostgreSQL (or the server binaries) are not usable, unless ``SWARM_TEST_REQUIRE_SERVICES=1``
(CI), where it fails.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import redis
from sqlalchemy import text

from app.core.db import create_engine
from tests.fixtures.process import free_port
from tests.fixtures.services import migrate, run_isolated, service_unusable

PG = "postgresql+asyncpg://{user}@127.0.0.1:5432/{database}"
PG_USERS = ("postgres", "root")


async def _admin(user: str, *statements: str) -> None:
    engine = create_engine(PG.format(user=user, database="postgres")).execution_options(isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


@dataclass
class PostgresDatabase:
    user: str
    name: str

    @property
    def url(self) -> str:
        return PG.format(user=self.user, database=self.name)

    async def go_away(self) -> None:
        """New connections are refused and every open one is cut, as when the server goes down."""
        await _admin(
            self.user,
            f'ALTER DATABASE "{self.name}" WITH ALLOW_CONNECTIONS false',
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{self.name}'",
        )

    async def come_back(self) -> None:
        await _admin(self.user, f'ALTER DATABASE "{self.name}" WITH ALLOW_CONNECTIONS true')


@pytest.fixture
async def postgres_database() -> AsyncIterator[PostgresDatabase]:
    failures = []
    for user in PG_USERS:
        name = f"swarm_fault_{secrets.token_hex(5)}"
        try:
            await _admin(user, f'CREATE DATABASE "{name}"')
        except Exception as exc:
            failures.append(f"{user}: {type(exc).__name__}")
            continue
        database = PostgresDatabase(user, name)
        try:
            yield database
        finally:
            await database.come_back()
            await _admin(user, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return
    reason = f"PostgreSQL is not usable at 127.0.0.1:5432 ({'; '.join(failures)})"
    if os.environ.get("SWARM_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason}, and SWARM_TEST_REQUIRE_SERVICES=1 requires it")
    pytest.skip(reason)


# -- servers of a test's own -------------------------------------------------------------------------

SERVER_START_S = 15


def _wait_for(ready: Callable[[], bool], what: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while not ready():
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not answer within {SERVER_START_S} s")
        time.sleep(0.02)


def _binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/local/bin")
    if found is None:
        service_unusable(f"`{name}` is not installed, and this test kills a server of its own")
    return found


@dataclass
class OwnRedis:
    """A ``redis-server`` on a free port with nothing persisted: a kill and a start is a restart that
    loses every key, as a Redis without persistence does."""

    binary: str
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _answers(self) -> bool:
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def start(self) -> None:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(
            [*command, "--dir", str(self.directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_for(self._answers, "redis-server", self.process)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(_binary("redis-server"), free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@dataclass
class OwnPostgres:
    """A PostgreSQL cluster (``initdb``) on a free port, trust auth, with one migrated database.

    PostgreSQL refuses to run as root: as root, its files and processes belong to the ``postgres``
    user. ``restart`` is a fast shutdown (every session is cut) and a start.
    """

    binary: str
    port: int
    directory: Path
    user: str | None  # the OS user the server runs as; None: this process's
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/swarm"

    def _answers(self) -> bool:
        async def connect() -> None:
            connection = await asyncpg.connect(host="127.0.0.1", port=self.port, user="postgres", timeout=1)
            await connection.close()

        try:
            run_isolated(connect())
        except (OSError, asyncpg.PostgresError):
            return False
        return True

    def start(self) -> None:
        settings = ["listen_addresses=127.0.0.1", "fsync=off", "full_page_writes=off", "synchronous_commit=off"]
        command = [self.binary, "-D", str(self.directory / "data"), "-p", str(self.port), "-k", str(self.directory)]
        for setting in settings:
            command += ["-c", setting]
        log = (self.directory / "postgres.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=log, user=self.user)
        _wait_for(self._answers, "postgres", self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown: sessions are cut, as in a restart
            self.process.wait(30)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    initdb, postgres = _binary("initdb"), _binary("postgres")
    user: str | None = None
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres").pw_name
        except KeyError:
            service_unusable("PostgreSQL cannot run as root and there is no `postgres` user to run it as")
    # not under pytest's tmp_path: its directories are private to this user, and the server may be another
    directory = Path(tempfile.mkdtemp(prefix="swarm-pg-"))
    if user is not None:
        shutil.chown(directory, user)
    server = OwnPostgres(postgres, free_port(), directory, user)
    try:
        subprocess.run(
            [initdb, "-D", str(directory / "data"), "-A", "trust", "-U", "postgres", "--no-sync"],
            check=True,
            capture_output=True,
            user=user,
        )
        server.start()
        run_isolated(_create_swarm_database(server.port))
        run_isolated(migrate(server.url))
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


async def _create_swarm_database(port: int) -> None:
    connection = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database="postgres", timeout=5)
    try:
        await connection.execute('CREATE DATABASE "swarm"')
    finally:
        await connection.close()
