"""The README stays a guide and the documentation site builds without a broken link."""

import os
import re
import subprocess
from pathlib import Path

from tests.helpers import BIN_DIR, REPO_ROOT


def test_the_docs_site_builds_strictly(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN_DIR / "mkdocs"), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO_ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "training" / "index.html").is_file()


def test_the_readme_is_a_guide_whose_pointers_exist() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 260
    for path in set(
        re.findall(r"`((?:docs|benchmarks|agfsync|steps|train|evaluation)/[\w./-]*)`", readme)
    ):
        assert (REPO_ROOT / path).exists(), path
    for test_file in set(re.findall(r"`(test_[\w*]+\.py)`", readme)):
        assert list((REPO_ROOT / "tests").glob(test_file)), test_file
