"""The documents show the code as it is: each `<!-- file: PATH -->` block equals that file."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
BLOCK = re.compile(r"<!-- file: (?P<path>\S+) -->\n```\w*\n(?P<body>.*?)```\n", re.S)


def test_the_custom_providers_guide_shows_the_fixture_verbatim() -> None:
    doc = (ROOT / "docs" / "custom-providers.md").read_text()
    blocks = list(BLOCK.finditer(doc))
    assert {m["path"] for m in blocks} == {
        "tests/plugins/custom_provider/mf_custom_provider/provider.py",
        "tests/plugins/custom_provider/pyproject.toml",
        "tests/plugins/custom_provider/mf_custom_provider/image/requirements.in",
    }
    for match in blocks:
        assert match["body"] == (ROOT / match["path"]).read_text(), f"{match['path']} drifted from the guide"
