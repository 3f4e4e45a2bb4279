"""The documents a user reads first: README.md stays a front door, every setting is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pipeline.settings

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_is_a_front_door() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme) <= 8000
    assert "uv run litminer demo" in readme and "uv run pytest" in readme  # the two commands
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).exists(), link


def test_every_variable_settings_reads_is_documented() -> None:
    source = Path(pipeline.settings.__file__).read_text(encoding="utf-8")
    read = set(re.findall(r'"((?:LITMINER|REDIS|OPENAI|OPENALEX|SEMANTIC_SCHOLAR)_[A-Z_]+)"', source))
    assert {"REDIS_URL", "LITMINER_SOURCES", "OPENAI_API_KEY", "LITMINER_API_KEYS"} <= read
    documented = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert sorted(name for name in read if f"`{name}`" not in documented) == []
