"""The config-key tables of docs/reference/config.md are the settings models' field descriptions, generated: no second
table to keep in step by hand. After changing a key, run `python -m scripts.docs_pages`, which writes them (and the
site's other generated parts) from `settings.readme_table(settings.MAIN_TABLE)` and `PROMOTION_TABLE`."""

import re
from pathlib import Path

from infra import settings

CONFIG_PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "config.md"


def test_the_config_reference_tables_are_the_settings_models():
    page = CONFIG_PAGE.read_text()
    for sections in (settings.MAIN_TABLE, settings.PROMOTION_TABLE):
        assert settings.readme_table(sections) in page, f"docs/reference/config.md's table of {sections} differs from the models"


def test_every_key_is_in_one_table():
    tables = settings.readme_table(settings.MAIN_TABLE) + settings.readme_table(settings.PROMOTION_TABLE)
    assert [k for k in settings.KEYS if f"| `{k}` |" not in tables] == []
    assert "dev or staging or prod" in tables, "a | inside a description would break the markdown table"


def test_a_range_the_readme_states_is_the_range_the_settings_accept():
    """errorRatePercent's row said 0..100 while 0 was refused: a stated range must be the field's bounds."""
    stated = {}
    for key, info in settings.fields():
        bounds = settings.bounds_of(info)
        if len(bounds) == 2 and (found := re.search(r"(\d[\d.]*)\.\.(\d[\d.]*)", info.description or "")):
            stated[key] = ([float(x) for x in found.groups()], [float(b) for b in bounds])
    assert len(stated) >= 15, "the ranges written in the descriptions were not found"
    assert {key: pair for key, pair in stated.items() if pair[0] != pair[1]} == {}
