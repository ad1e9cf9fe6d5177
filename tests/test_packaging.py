"""The built wheel installs, maps `steps/`+`pipelines/` under `agfsync`, and runs."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository built as a wheel and installed (no deps) into its own folder."""
    root = tmp_path_factory.mktemp("wheel")
    # Build from a copy so no build/ or egg-info leftovers land in (or come from) the checkout.
    source = root / "source"
    shutil.copytree(
        REPO_ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "agfsync-data"
        ),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(root / "dist"),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (root / "dist").glob("agfsync-*.whl")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--target",
            str(root / "site"),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    return root / "site"


def _python(code: str, site: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    # The wheel's folder goes first on the path, so it shadows the editable install.
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


class TestWheel:
    def test_has_no_generic_top_level_packages(self, wheel_site: Path) -> None:
        top_level = {path.name for path in wheel_site.iterdir() if path.is_dir()}
        assert "agfsync" in top_level
        assert not top_level & {"steps", "pipelines", "train", "evaluation", "tests"}

    def test_imports_steps_and_presets_from_the_wheel(
        self, wheel_site: Path, tmp_path: Path
    ) -> None:
        result = _python(
            "import agfsync, agfsync.steps, agfsync.pipelines;"
            "print(agfsync.__file__); print(agfsync.steps.__file__);"
            "print(agfsync.pipelines.preset_yaml_path('offline').is_file())",
            wheel_site,
            tmp_path,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        agfsync_file, steps_file, has_yaml = result.stdout.split()
        assert agfsync_file.startswith(str(wheel_site))
        assert steps_file.startswith(str(wheel_site / "agfsync" / "steps"))
        assert has_yaml == "True"

    def test_runs_the_offline_preset_outside_the_checkout(
        self, wheel_site: Path, tmp_path: Path
    ) -> None:
        result = _python(
            "import sys; from agfsync.cli import app;"
            "sys.argv = ['agfsync', 'generate', '-o', 'out', '--num-prompts', '2',"
            " '--num-images', '2']; app()",
            wheel_site,
            tmp_path,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "2 preference pairs" in result.stdout
        assert list((tmp_path / "out" / "data").glob("*.parquet"))


class TestEditableInstall:
    def test_maps_steps_and_pipelines_to_the_checkout(self, tmp_path: Path) -> None:
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "import agfsync.steps, agfsync.pipelines as p;"
                "print(agfsync.steps.__file__); print(p.__file__)",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        steps_file, pipelines_file = result.stdout.split()
        assert Path(steps_file) == REPO_ROOT / "steps" / "__init__.py"
        assert Path(pipelines_file) == REPO_ROOT / "pipelines" / "__init__.py"
