"""Operator docs cannot drift from the code: every setting and variable is documented."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from bot.settings import Environment, FeedConfig, FileConfig, SubscriptionConfig

REPO = Path(__file__).resolve().parent.parent
CONFIGURATION = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
ENV_EXAMPLE = (REPO / ".env.example").read_text(encoding="utf-8")


def _section(heading: str) -> str:
    match = re.search(rf"^## {re.escape(heading)}.*?$(.*?)(?=^## |\Z)", CONFIGURATION, re.M | re.S)
    assert match, f"docs/configuration.md has no section {heading!r}"
    return match.group(1)


def _documented_keys(heading: str) -> set[str]:
    return set(re.findall(r"^\| `([a-z_]+)` \|", _section(heading), re.M))


def test_every_settings_key_is_documented_with_a_default() -> None:
    sections: dict[str, type[BaseModel]] = {
        f"`[{name}]`": field.annotation  # type: ignore[misc]
        for name, field in FileConfig.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    }
    sections["`[[feeds]]`"] = FeedConfig
    sections["`[[subscriptions]]`"] = SubscriptionConfig
    assert len(sections) == len(FileConfig.model_fields)
    for heading, model in sections.items():
        assert _documented_keys(heading) == set(model.model_fields), heading


class _Recording(dict[str, str]):
    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        self.asked.append(key)
        return default


def test_every_environment_variable_is_documented() -> None:
    recording = _Recording()
    Environment.from_mapping(recording)
    variables = {*recording.asked, "COUNTERPARTY_CONFIG"}
    assert "TELEGRAM_TOKEN" in variables
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", _section("Environment variables"), re.M))
    assert variables <= documented
    in_example = set(re.findall(r"^#?([A-Z_]+)=", ENV_EXAMPLE, re.M))
    assert variables <= in_example
