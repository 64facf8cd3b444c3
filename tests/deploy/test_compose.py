"""docker/compose.yaml, docker/Dockerfile and .dockerignore, checked without a container engine.

The compose file goes through a real Compose v2 (``docker compose config``: the Compose
specification's schema, interpolation, merge keys, references between services), then its
rendered model is held to the topology docs/deployment.md describes, and the environment each
container would get is loaded into ``Settings`` as the app would load it. The Dockerfile is parsed:
stages, user, health check, and every file it copies present in the build context.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy.engine import make_url

from app.core.settings import Settings
from tests.deploy.tools import compose_command
from tests.fixtures.services import service_unusable

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker" / "compose.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

APP_SERVICES = ("migrate", "api", "worker")
LONG_RUNNING = ("postgres", "redis", "api", "worker", "lb")


# -- Compose -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> list[str]:
    command, why = compose_command()
    if command is None:
        service_unusable(why)
    return command


def render(
    compose: list[str], tmp_path: Path, file: Path = COMPOSE_FILE, dotenv: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    """``docker compose config --format json`` on ``file``, with only ``env`` and ``dotenv`` for interpolation."""
    env_file = tmp_path / "compose.env"  # not docker/.env: a developer's own settings must not leak in
    env_file.write_text(dotenv)
    return subprocess.run(
        [*compose, "--env-file", str(env_file), "-f", str(file), "config", "--format", "json"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def rendered(compose: list[str], tmp_path: Path, dotenv: str = "", **env: str) -> dict[str, Any]:
    done = render(compose, tmp_path, dotenv=dotenv, **env)
    assert done.returncode == 0, f"docker compose config refused docker/compose.yaml:\n{done.stderr}"
    model: dict[str, Any] = json.loads(done.stdout)
    return model


@pytest.fixture(scope="module")
def model(compose: list[str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return rendered(compose, tmp_path_factory.mktemp("compose"))


def services(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = model["services"]
    return result


def environment(service: dict[str, Any]) -> dict[str, str]:
    """What the container gets: a variable without a value is passed through only when set, so absent."""
    return {k: v for k, v in (service.get("environment") or {}).items() if v is not None}


def healthcheck_url(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    found = re.search(r"https?://[^\s'\"]+", " ".join(test))
    assert found, f"no URL in the health check {test}"
    return found.group(0)


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_compose_config_validates(model: dict[str, Any]) -> None:
    assert model["name"] == "swarmdirector"
    assert set(services(model)) == {"postgres", "redis", "migrate", "api", "worker", "lb"}


def test_the_validator_rejects_what_the_engine_would(compose: list[str], tmp_path: Path) -> None:
    """Not a rubber stamp: a wrong condition (schema) and a dangling dependency (model) are refused."""
    text = COMPOSE_FILE.read_text()
    broken = tmp_path / "docker"
    broken.mkdir()
    assert "condition: service_completed_successfully" in text
    (broken / "compose.yaml").write_text(text.replace("service_completed_successfully", "service_finished", 1))
    done = render(compose, tmp_path, file=broken / "compose.yaml")
    assert done.returncode != 0 and "depends_on.migrate.condition" in done.stderr, done.stderr

    (broken / "compose.yaml").write_text(text.replace("\n  migrate:\n", "\n  migrations:\n", 1))
    done = render(compose, tmp_path, file=broken / "compose.yaml")
    assert done.returncode != 0 and "migrate" in done.stderr, done.stderr


def test_images_and_the_one_image_of_the_app(model: dict[str, Any]) -> None:
    s = services(model)
    assert s["postgres"]["image"].split(":")[1].startswith("16")
    assert s["redis"]["image"].split(":")[1].startswith("7")
    assert s["lb"]["image"].startswith("nginx:")
    images = {s[name]["image"] for name in APP_SERVICES}
    assert len(images) == 1, f"migrate, api and worker must run the same image: {images}"
    # built once, by the service every other one waits for; never pulled from a registry by name
    builders = [name for name, service in s.items() if "build" in service]
    assert builders == ["migrate"], builders
    build = s["migrate"]["build"]
    assert Path(build["context"]) == ROOT
    assert (Path(build["context"]) / build["dockerfile"]).resolve() == DOCKERFILE
    assert s["migrate"]["pull_policy"] == "build"
    for name in ("api", "worker"):
        assert s[name]["pull_policy"] == "never", name
        assert "migrate" in s[name]["depends_on"], name


def test_two_api_replicas_behind_one_published_port(model: dict[str, Any]) -> None:
    s = services(model)
    assert s["api"]["deploy"]["replicas"] == 2
    assert s["worker"]["deploy"]["replicas"] >= 1
    published = {name: service.get("ports", []) for name, service in s.items() if service.get("ports")}
    assert list(published) == ["lb"], f"only the load balancer publishes a port: {published}"
    (port,) = published["lb"]
    assert port["published"] == "8000"

    # the load balancer listens where the port goes, and proxies to the port the API listens on
    (mount,) = s["lb"]["volumes"]
    conf_path = Path(mount["source"])
    assert conf_path == ROOT / "docker" / "nginx.conf" and conf_path.exists()
    assert mount["target"] == "/etc/nginx/conf.d/default.conf" and mount["read_only"]
    conf = conf_path.read_text()
    assert re.search(rf"^\s*listen\s+{port['target']};", conf, re.M)
    assert f"http://api:{option(s['api']['command'], '--port')}" in conf
    assert s["lb"]["depends_on"]["api"]["condition"] == "service_healthy"


def test_every_long_running_service_has_a_health_check(model: dict[str, Any]) -> None:
    s = services(model)
    for name in LONG_RUNNING:
        check = s[name].get("healthcheck")
        assert check and not check.get("disable") and check["test"][0] in ("CMD", "CMD-SHELL"), name
    assert "pg_isready" in " ".join(s["postgres"]["healthcheck"]["test"])
    assert "redis-cli ping" in " ".join(s["redis"]["healthcheck"]["test"])

    api, worker = s["api"], s["worker"]
    assert urlsplit(healthcheck_url(api)).port == int(option(api["command"], "--port"))
    assert urlsplit(healthcheck_url(api)).path == "/readyz"
    assert urlsplit(healthcheck_url(worker)).port == int(option(worker["command"], "--port"))
    assert urlsplit(healthcheck_url(worker)).path == "/healthz"
    # the image's own HEALTHCHECK follows SWARM_HEALTHCHECK_URL: the worker's must name its port
    assert environment(worker)["SWARM_HEALTHCHECK_URL"] == healthcheck_url(worker)
    for name in ("api", "worker"):
        code = s[name]["healthcheck"]["test"][-1]
        compile(code, f"{name} healthcheck", "exec")


def test_one_migration_step_before_everything_else(model: dict[str, Any]) -> None:
    s = services(model)
    migrate = s["migrate"]
    assert migrate["command"] == ["swarmdirector", "db", "upgrade"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        depends = {k: v["condition"] for k, v in s[name]["depends_on"].items()}
        assert depends == {
            "postgres": "service_healthy",
            "redis": "service_healthy",
            "migrate": "service_completed_successfully",
        }, name
    for name in APP_SERVICES:
        assert environment(s[name])["SWARM_AUTO_MIGRATE"] == "false", name


def test_roles_and_commands(model: dict[str, Any]) -> None:
    s = services(model)
    assert s["api"]["command"][:2] == ["swarmdirector", "serve"]
    assert environment(s["api"])["SWARM_EXECUTE_RUNS"] == "false"
    assert option(s["api"]["command"], "--host") == "0.0.0.0"
    assert s["worker"]["command"][:2] == ["swarmdirector", "worker"]
    assert option(s["worker"]["command"], "--host") == "0.0.0.0"  # /metrics reachable by a scraper
    assert "SWARM_EXECUTE_RUNS" not in environment(s["worker"])


def test_app_services_share_the_database_and_redis(model: dict[str, Any]) -> None:
    s = services(model)
    pg = s["postgres"]["environment"]
    for name in APP_SERVICES:
        env = environment(s[name])
        url = make_url(env["SWARM_DATABASE_URL"])
        assert url.drivername == "postgresql+asyncpg"
        assert (url.host, url.port, url.username, url.password, url.database) == (
            "postgres",
            5432,
            pg["POSTGRES_USER"],
            pg["POSTGRES_PASSWORD"],
            pg["POSTGRES_DB"],
        ), name
        assert urlsplit(env["SWARM_REDIS_URL"]).hostname == "redis", name
        assert env["SWARM_REDIS_PREFIX"] == "swarm"


def test_containers_stop_after_the_runs_grace(model: dict[str, Any]) -> None:
    for name in ("api", "worker"):
        service = services(model)[name]
        grace = float(environment(service)["SWARM_SHUTDOWN_GRACE_S"])
        stop = service["stop_grace_period"]
        assert stop.endswith("s") and float(stop[:-1]) > grace + 5, name  # uvicorn waits grace + 5 s


def settings_of(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings the container's process would load from its environment."""
    for name, value in environment(service).items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_each_container_gets_valid_production_settings(model: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """With nothing exported: production, a real default model, distributed; no empty key."""
    for name in APP_SERVICES:
        with monkeypatch.context() as env:
            settings = settings_of(services(model)[name], env)
        assert settings.environment == "production", name
        assert settings.distributed and not settings.auto_migrate, name
        assert not settings.resolved_default_model.startswith("fake/"), name
        assert settings.openai_api_key is None, f"{name}: an unset key must stay unset, not become ''"
    with monkeypatch.context() as env:
        assert settings_of(services(model)["api"], env).execute_runs is False


def test_the_environment_passes_keys_and_choices_through(
    compose: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = rendered(
        compose,
        tmp_path,
        OPENAI_API_KEY="sk-test-123",
        SWARM_DEFAULT_MODEL="openai/gpt-4.1-mini",
        POSTGRES_PASSWORD="s3cret",
        SWARM_PUBLISHED_PORT="9080",
        SWARM_IMAGE="registry.example/swarmdirector:1.2",
    )
    s = services(model)
    assert s["lb"]["ports"][0]["published"] == "9080"
    assert s["postgres"]["environment"]["POSTGRES_PASSWORD"] == "s3cret"
    for name in APP_SERVICES:
        env = environment(s[name])
        assert env["OPENAI_API_KEY"] == "sk-test-123", name
        assert make_url(env["SWARM_DATABASE_URL"]).password == "s3cret", name
        assert s[name]["image"] == "registry.example/swarmdirector:1.2", name
        with monkeypatch.context() as patch:
            settings = settings_of(s[name], patch)
        assert settings.resolved_default_model == "openai/gpt-4.1-mini"
        assert settings.openai_api_key is not None and settings.openai_api_key.get_secret_value() == "sk-test-123"


def test_an_env_file_works_like_the_shell(compose: list[str], tmp_path: Path) -> None:
    """docker/.env (here: --env-file) feeds the pass-through variables too, not only ``${...}``."""
    model = rendered(compose, tmp_path, dotenv="OPENAI_API_KEY=sk-from-dotenv\nSWARM_PUBLISHED_PORT=9090\n")
    assert environment(services(model)["worker"])["OPENAI_API_KEY"] == "sk-from-dotenv"
    assert services(model)["lb"]["ports"][0]["published"] == "9090"


def test_a_development_stack_may_use_the_fake_model(
    compose: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = rendered(compose, tmp_path, SWARM_ENVIRONMENT="development", SWARM_DEFAULT_MODEL="fake/default")
    with monkeypatch.context() as env:
        settings = settings_of(services(model)["worker"], env)
    assert settings.environment == "development" and settings.resolved_default_model == "fake/default"


# -- Dockerfile and .dockerignore ----------------------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuations joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        result.append((keyword.upper(), rest.strip()))
        pending = ""
    assert not pending, "a continuation runs off the end of the Dockerfile"
    return result


def stages(text: str) -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions(text):
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, rest))
    return found


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
            continue
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
            continue
        else:
            out += re.escape(char)
        i += 1
    return re.compile(out + r"\Z")


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((negated, _ignore_regex(pattern)))
    return rules


def in_build_context(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parents decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for negated, regex in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            excluded = not negated
    return not excluded


def test_the_ignore_matcher_follows_docker() -> None:
    rules = [(False, _ignore_regex("*")), (True, _ignore_regex("app")), (False, _ignore_regex("**/__pycache__"))]
    assert in_build_context("app/core/x.py", rules)
    assert not in_build_context("app/core/__pycache__/x.pyc", rules)
    assert not in_build_context("tests/x.py", rules)


def test_dockerfile_is_multi_stage_non_root_and_healthchecked() -> None:
    text = DOCKERFILE.read_text()
    build, *_, final = stages(text)
    assert len(stages(text)) >= 2
    assert re.search(r"\bAS\s+build$", build[0][1], re.I)
    keywords = [keyword for keyword, _ in final]
    assert any(k == "COPY" and rest.startswith("--from=build ") for k, rest in final), "the runtime copies the build"
    assert not any(k == "RUN" and "pip install" in rest for k, rest in final), "no installing in the runtime stage"

    users = [rest for k, rest in final if k == "USER"]
    assert users and users[-1] not in ("root", "0") and not users[-1].startswith(("root:", "0:"))
    assert any(k == "RUN" and "useradd" in rest and users[-1] in rest for k, rest in final)
    assert keywords.index("USER") < keywords.index("CMD")

    (check,) = [rest for k, rest in final if k == "HEALTHCHECK"]
    options, _, command = check.partition(" CMD ")
    assert "--interval=" in options and "--timeout=" in options
    exec_form = json.loads(command)
    assert exec_form[:2] == ["python", "-c"]
    compile(exec_form[2], "HEALTHCHECK", "exec")
    env = " ".join(rest for k, rest in final if k == "ENV")
    assert "SWARM_HEALTHCHECK_URL=http://127.0.0.1:8000/healthz" in env
    assert "SWARM_HOST=0.0.0.0" in env and "PYTHONPATH=/srv" in env
    assert ("EXPOSE", "8000") in final

    (cmd,) = [rest for k, rest in final if k == "CMD"]
    program, *args = json.loads(cmd)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert program in scripts and args == ["serve"]


def test_every_file_the_dockerfile_copies_is_in_the_build_context() -> None:
    rules = dockerignore_rules()
    copied: list[str] = []
    for stage in stages(DOCKERFILE.read_text()):
        for keyword, rest in stage:
            if keyword not in ("COPY", "ADD") or "--from=" in rest:
                continue
            *sources, _ = [part for part in rest.split() if not part.startswith("--")]
            copied.extend(sources)
    assert {"pyproject.toml", "README.md", "app", "alembic.ini", "migrations"} <= set(copied)
    for source in copied:
        path = ROOT / source
        assert path.exists(), f"the Dockerfile copies {source}, which does not exist"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        wanted = [f for f in files if "__pycache__" not in f.parts and f.suffix != ".pyc"]
        assert wanted, source
        for file in wanted:
            relative = file.relative_to(ROOT).as_posix()
            assert in_build_context(relative, rules), f".dockerignore leaves out {relative}, which the image needs"


def test_dockerignore_keeps_secrets_and_bulk_out() -> None:
    rules = dockerignore_rules()
    for path in (".env", ".venv/bin/python", ".git/HEAD", "swarmdirector.db", "tests/conftest.py", "docker/.env"):
        assert not in_build_context(path, rules), path
    assert not in_build_context("app/core/__pycache__/settings.cpython-311.pyc", rules)
    # the migration that the running code expects is in the image
    migrations = sorted((ROOT / "migrations" / "versions").glob("*.py"))
    assert migrations and all(in_build_context(p.relative_to(ROOT).as_posix(), rules) for p in migrations)


def test_the_runtime_stage_layout_migrates_the_database(tmp_path: Path) -> None:
    """The runtime stage's files, laid out as its COPYs and .dockerignore say, are enough to migrate.

    ``swarmdirector db upgrade`` finds alembic.ini and migrations/ next to the code it imports; the
    image puts both under WORKDIR with the code on PYTHONPATH. Here the same layout under tmp_path
    takes the place of /srv, with only the files the build context would hold.
    """
    rules = dockerignore_rules()
    final = stages(DOCKERFILE.read_text())[-1]
    srv = tmp_path / "srv"
    workdir: str | None = None
    for keyword, rest in final:
        if keyword == "WORKDIR":
            workdir = rest
        if keyword != "COPY" or "--from=" in rest:
            continue
        assert workdir is not None, "a COPY before WORKDIR"
        *sources, dest = rest.split()
        for source in sources:
            base = ROOT / source
            files = [base] if base.is_file() else [p for p in base.rglob("*") if p.is_file()]
            for file in files:
                relative = file.relative_to(ROOT).as_posix()
                if not in_build_context(relative, rules):
                    continue
                inside = file.name if base.is_file() else file.relative_to(base).as_posix()
                target = srv / dest / inside if (dest.endswith("/") or base.is_dir()) else srv / dest
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(file.read_bytes())
    env_line = " ".join(rest for k, rest in final if k == "ENV")
    assert f"PYTHONPATH={workdir}" in env_line

    database = tmp_path / "data" / "swarm.db"
    database.parent.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(srv),
        "SWARM_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "SWARM_LOG_LEVEL": "WARNING",
    }
    where = subprocess.run(
        [sys.executable, "-c", "import app; print(app.__file__)"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert Path(where.stdout.strip()).is_relative_to(srv), "the image's code must be the one imported"
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "db", "upgrade"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "database is at head" in done.stdout
    assert database.exists()
