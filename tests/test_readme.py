"""README.md stays true: its configuration reference is the one the models generate."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_config_reference_matches_the_models() -> None:
    generated = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "config_reference.py")],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    readme = (ROOT / "README.md").read_text()
    start = readme.index("<!-- config-reference:start -->\n") + len(
        "<!-- config-reference:start -->\n"
    )
    end = readme.index("<!-- config-reference:end -->")
    assert readme[start:end] == generated, (
        "README.md's configuration reference is stale: run "
        "python scripts/config_reference.py --write"
    )
