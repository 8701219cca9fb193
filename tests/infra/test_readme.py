"""The README documents every stack config key the settings module accepts."""

from pathlib import Path

from infra.settings import KEYS


def test_every_config_key_is_documented():
    readme = Path(__file__).resolve().parents[2].joinpath("README.md").read_text()
    undocumented = [key for key in KEYS if f"| `{key}` |" not in readme]
    assert not undocumented, f"README lacks config keys: {undocumented}"
