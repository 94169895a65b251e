"""The theme catalog: every spec id is there, and a bad file is rejected naming entry and field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.matching.catalog import PACKAGED_THEMES, CatalogError, load_catalog
from bot.matching.matcher import Matcher
from bot.matching.records import Item
from tests.conftest import shared_path

# The ids fixed by ../shared/spec/themes.md, kept here too so the test runs without ../shared.
THEME_IDS = [
    "russia-overstretched",
    "words-not-deeds",
    "putin-deal",
    "pressure-on-kyiv",
    "iran-war-diplomacy",
    "energy-windfall",
    "us-vs-russian-partners",
    "russia-iran-axis",
]
CLAIM_THEMES = {
    "putin-ready-to-deal": ("putin-deal",),
    "putin-willing-counterparty": ("putin-deal",),
    "zelenskyy-obstacle": ("pressure-on-kyiv", "putin-deal"),
    "iran-no-counterparty": ("iran-war-diplomacy",),
    "not-our-war": ("words-not-deeds", "russia-iran-axis"),
    "russia-could-not-help": ("russia-overstretched", "russia-iran-axis"),
    "un-support-only": ("words-not-deeds",),
    "prioritising-us-mediation": ("words-not-deeds", "putin-deal"),
    "energy-benefits-russia": ("energy-windfall",),
    "partners-abandoned": ("us-vs-russian-partners", "words-not-deeds"),
}


def test_packaged_catalog_holds_every_theme_in_spec_order() -> None:
    catalog = load_catalog()
    assert list(catalog.themes) == THEME_IDS
    for theme in catalog.themes.values():
        assert theme.title
        assert theme.description
        assert theme.essay_quote
        assert theme.positive_examples
        assert theme.negative_examples


def test_packaged_catalog_holds_every_claim_with_its_themes() -> None:
    catalog = load_catalog()
    assert {c.id: c.themes for c in catalog.claims.values()} == CLAIM_THEMES
    peskov = catalog.claims["not-our-war"]
    assert "Peskov" in peskov.claimant
    assert "isn’t our war" in peskov.quote
    for claim in catalog.claims.values():
        assert claim.source
        assert claim.date
        assert claim.comment
        assert claim.rules


def test_catalog_ids_match_the_spec_table() -> None:
    spec = shared_path("spec", "themes.md").read_text(encoding="utf-8")
    themes_part, claims_part = spec.split("## Claims", 1)
    spec_themes = re.findall(r"^\| `([a-z0-9-]+)` \|", themes_part, re.MULTILINE)
    spec_claims = re.findall(r"^\| `([a-z0-9-]+)` \|", claims_part, re.MULTILINE)
    catalog = load_catalog()
    assert spec_themes == THEME_IDS == list(catalog.themes)
    assert spec_claims == list(CLAIM_THEMES) == list(catalog.claims)


def test_essay_quotes_come_from_the_essay() -> None:
    essay = shared_path("essay", "drezner-2026-03-06.txt").read_text(encoding="utf-8")
    catalog = load_catalog()
    # The theme's framing sentence(s) are the essay's own words (modulo the ellipses between them).
    for theme in catalog.themes.values():
        for part in re.split(r"…\.?|\.\.\.", theme.essay_quote):
            part = part.strip(' “”"')
            if len(part) > 20:
                assert part[:40] in essay, (theme.id, part[:40])


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "themes.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_errors_name_the_entry_and_the_field(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
[aliases]
russia = ["Russia"]

[[theme]]
id = "putin-deal"
description = "d"
essay_quote = "q"
keywords = ["Putin"]
threshold = "high"
anchors = ["ukraine"]
[[theme.rule]]
all = ["russia", "nowhere"]

[[theme]]
title = "no id here"

[[claim]]
id = "some-claim"
claimant = "x"
quote = "q"
source = "s"
date = "d"
comment = "c"
themes = ["not-a-theme"]
""",
    )
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    problems = caught.value.problems
    assert "theme 'putin-deal': field 'title' is missing" in problems
    assert "theme 'putin-deal': field 'threshold' must be a number in (0, 5]" in problems
    assert "theme 'putin-deal': rule 1: field 'all' names unknown group 'nowhere'" in problems
    assert "theme 'putin-deal': field 'anchors' names unknown group 'ukraine'" in problems
    assert "theme #2: field 'id' is missing" in problems
    assert "claim 'some-claim': field 'themes' names unknown theme 'not-a-theme'" in problems
    assert str(path) in str(caught.value)


def test_missing_file_and_bad_toml_are_catalog_errors(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="file not found"):
        load_catalog(tmp_path / "absent.toml")
    with pytest.raises(CatalogError, match="not valid TOML"):
        load_catalog(_write(tmp_path, "[[theme]\nid = 1"))


def test_a_valid_override_file_loads(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
[aliases]
russia = ["Russia", "Kremlin"]

[[theme]]
id = "one-theme"
title = "T"
description = "D"
essay_quote = "Q"
keywords = ["Kremlin"]
[theme.cues]
talks = ["talks"]
[[theme.rule]]
all = ["russia", "talks"]
weight = 1.0
""",
    )
    catalog = load_catalog(path)
    assert list(catalog.themes) == ["one-theme"]
    assert catalog.claims == {}
    assert catalog.path == path
    assert PACKAGED_THEMES.exists()


def test_off_topic_terms_veto_unless_an_anchor_is_in_the_lead(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
[aliases]
russia = ["Russia", "Kremlin"]
ukraine = ["Ukraine", "Kyiv"]

[[theme]]
id = "talks"
title = "T"
description = "D"
essay_quote = "Q"
keywords = ["Kremlin"]
off_topic = ["Gaza"]
anchors = ["ukraine"]
[theme.cues]
talks = ["talks"]
[[theme.rule]]
all = ["russia", "talks"]
weight = 1.0
""",
    )
    matcher = Matcher(load_catalog(path))

    def themes(title: str) -> list[str]:
        return [m.theme_id for m in matcher.match(Item(id="x", title=title)).themes]

    assert themes("Kremlin open to talks") == ["talks"]
    assert themes("Kremlin open to talks on Gaza") == []
    assert themes("Kremlin open to talks on Gaza and Ukraine") == ["talks"]
