"""Clients generated from the OpenAPI document, as users generate them: they compile, type-check and work.

The document is the app's live one (``tests/docs`` checks that docs/openapi.json equals it). The
Python client is generated with openapi-python-client, type-checked with this program under
``mypy --strict`` and driven against a real server; the TypeScript types come from
openapi-typescript and a small program using them passes ``tsc --noEmit``. Nothing generated is
kept: it all lands in the test's temporary folder (the generators are cached, see toolchain.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.core.openapi import render
from app.core.settings import Settings
from app.main import create_app
from tests.clients.toolchain import cache_dir, npm_tools, python_generator
from tests.conftest import LiveServer

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent
PACKAGE = "swarmdirector_client"
# the generator's own client.py passes `*args: object` on to httpx's __exit__; the rest must be strict-clean
MYPY_INI = f"""
[mypy]
strict = True
python_version = 3.11
[mypy-{PACKAGE}.client]
disable_error_code = arg-type
"""


def run(args: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture
def openapi_file(settings: Settings, tmp_path: Path) -> Path:
    path = tmp_path / "openapi.json"
    path.write_text(render(create_app(settings).openapi()))
    return path


def test_the_generated_python_client_type_checks_and_drives_a_run(
    openapi_file: Path, live_server: LiveServer, tmp_path: Path
) -> None:
    tools = python_generator()
    out = tmp_path / "python"
    out.mkdir()
    env = {**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"}
    log = run(
        [str(tools / "openapi-python-client"), "generate", "--path", str(openapi_file), "--meta", "none",
         "--output-path", str(out / PACKAGE)],
        cwd=out,
        env=env,
    )  # fmt: skip
    assert "Warning" not in log, f"the generator could not use every part of the document:\n{log}"
    assert (out / PACKAGE / "api" / "runs" / "create_run.py").exists()

    program = out / "python_flow.py"
    shutil.copy(HERE / "python_flow.py", program)
    (out / "mypy.ini").write_text(MYPY_INI)
    run(
        [sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "--cache-dir", str(cache_dir() / "mypy"),
         PACKAGE, "python_flow.py"],
        cwd=out,
    )  # fmt: skip

    seen = json.loads(run([sys.executable, str(program), live_server.url], cwd=out))
    assert seen["team"] == "generated_pair"
    assert seen["status"] == "succeeded"
    assert [agent for agent, _ in seen["messages"]] == ["user", "writer", "critic"]
    assert seen["messages"][0][1] == "Write a haiku about rivers."
    assert seen["first_is_queued"] and seen["last_is_completed"]
    assert {"MessageDeltaEvent", "MessageCompletedEvent", "RunStartedEvent"} <= set(seen["event_classes"])
    assert seen["deltas_rebuild_messages"] is True
    assert seen["follow_up"] == ["succeeded", True]
    assert seen["problem"] == [404, "not_found"]


def test_the_typescript_types_type_check_a_program_that_uses_them(openapi_file: Path, tmp_path: Path) -> None:
    bin_dir = npm_tools()
    out = tmp_path / "typescript"
    shutil.copytree(HERE / "typescript", out)
    log = run([str(bin_dir / "openapi-typescript"), str(openapi_file), "-o", str(out / "schema.d.ts")], cwd=out)
    assert "⚠" not in log and "warn" not in log.lower(), log
    schema = (out / "schema.d.ts").read_text()
    assert '"message.delta"' in schema and "RunEvent:" in schema
    run([str(bin_dir / "tsc"), "--noEmit", "-p", "tsconfig.json"], cwd=out)
