"""docker-compose.yml, checked without Docker: SQLite by default, a postgres profile, no secrets."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_bot_runs_alone_on_sqlite_by_default(compose: dict[str, Any]) -> None:
    services = compose["services"]
    default = [name for name, service in services.items() if "profiles" not in service]
    assert default == ["bot"], "only the bot starts without a profile"
    bot = services["bot"]
    assert bot["build"] == "."
    assert bot["env_file"] == ".env"
    assert (
        bot["environment"]["COUNTERPARTY_DATABASE_URL"]
        == "${COUNTERPARTY_DATABASE_URL:-sqlite:////data/counterparty.db}"
    )
    assert any(v.split(":")[1] == "/data" for v in bot["volumes"])
    assert "./feeds.toml:/app/feeds.toml:ro" in bot["volumes"]
    # Waiting for PostgreSQL only applies when its profile is active.
    assert bot["depends_on"]["postgres"] == {"condition": "service_healthy", "required": False}


def test_postgres_profile_adds_a_healthchecked_database(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    assert postgres["profiles"] == ["postgres"]
    assert re.fullmatch(r"postgres:\d+\.\d+(-\w+)?", postgres["image"]), "pin the image tag"
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert postgres["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD")
    assert {"counterparty-data", "counterparty-postgres"} <= set(compose["volumes"])


def test_env_example_explains_how_to_point_the_bot_at_the_profile() -> None:
    example = (REPO / ".env.example").read_text(encoding="utf-8")
    assert "#COMPOSE_PROFILES=postgres" in example
    match = re.search(
        r"^#COUNTERPARTY_DATABASE_URL=(postgresql://\S+@postgres:5432/\S+)$", example, re.M
    )
    assert match, "the example shows the URL of the compose postgres service"


def test_no_secret_values_in_compose_or_env_example() -> None:
    for name in ("docker-compose.yml", ".env.example"):
        text = (REPO / name).read_text(encoding="utf-8")
        for line in text.splitlines():
            if line.startswith(("DISCORD_TOKEN=", "TELEGRAM_TOKEN=")):
                assert line.endswith("="), f"{name} ships a token value: {line}"
