"""The user's files are sacred: agfsync replaces only folders it wrote (by its marker),
refuses any other non-empty output folder before doing any work, and with
`--overwrite` writes beside the user's files without touching them.

Each command that takes an output folder is tried on a folder that looks like a
user's project (a README.md among other files); the folder must come out byte for
byte as it went in.
"""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agfsync.cli import app
from agfsync.errors import ConfigurationError
from agfsync.ownership import MARKER, FolderKind, Ownership, check_output_folder, write_folder
from tests.helpers import run_command

runner = CliRunner()


def make_project(folder: Path) -> dict[str, bytes]:
    """A user's project: files agfsync must never lose. Returns their contents."""
    files = {
        "README.md": b"# my project\n",
        "src/main.py": b"print('hello')\n",
        "thesis.tex": b"\\documentclass{article}\n",
    }
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return files


def contents(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file()
    }


def agfsync(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


REFUSAL = "is not empty and was not written by agfsync"
NOT_OURS = "was not written by agfsync|which agfsync did not write"


class TestEveryCommandRefusesAUsersFolder:
    """Before any work: nothing is loaded, nothing is written, the folder is unchanged."""

    def test_generate(self, tmp_path: Path) -> None:
        files = make_project(tmp_path)
        code, output = agfsync("generate", "--num-prompts", "2", "-o", str(tmp_path))
        assert code == 2 and REFUSAL in output and "--overwrite" in output
        assert contents(tmp_path) == files

    def test_generate_into_the_current_folder(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        files = make_project(tmp_path)
        monkeypatch.chdir(tmp_path)
        code, output = agfsync("generate", "--num-prompts", "2", "-o", ".")
        assert code == 2 and REFUSAL in output
        assert len(output.strip().splitlines()) == 1
        assert contents(tmp_path) == files

    def test_overwrite_never_replaces_a_users_file(self, tmp_path: Path) -> None:
        files = make_project(tmp_path)
        code, output = agfsync("generate", "-o", str(tmp_path), "--overwrite")
        assert code == 2 and "README.md, which agfsync did not write" in output
        assert contents(tmp_path) == files

    def test_publish_dry_run(self, offline_run: Path, tmp_path: Path) -> None:
        files = make_project(tmp_path)
        code, output = agfsync(
            "publish", str(offline_run), "--repo-id", "org/x", "--dry-run", str(tmp_path)
        )
        assert code == 2 and REFUSAL in output
        assert contents(tmp_path) == files

    def test_publish_dry_run_into_the_run_folder(self, offline_run: Path) -> None:
        before = contents(offline_run)
        code, output = agfsync(
            "publish", str(offline_run), "--repo-id", "org/x", "--dry-run", str(offline_run)
        )
        assert code == 2 and "which this command reads" in output
        assert contents(offline_run) == before

    def test_report_into_the_dataset(self, offline_run: Path) -> None:
        before = contents(offline_run)
        code, output = agfsync("report", str(offline_run), "-o", str(offline_run))
        assert code == 2 and "which this command reads" in output
        assert contents(offline_run) == before

    def test_report_into_a_users_folder(self, offline_run: Path, tmp_path: Path) -> None:
        files = make_project(tmp_path)
        code, output = agfsync("report", str(offline_run), "-o", str(tmp_path))
        assert code == 2 and REFUSAL in output
        assert contents(tmp_path) == files

    def test_argilla_pull_before_asking_the_server(self, tmp_path: Path) -> None:
        files = make_project(tmp_path)
        code, output = agfsync(
            "argilla", "pull", "pairs", "--out", str(tmp_path),
            "--api-url", "http://127.0.0.1:9", "--api-key", "k",
        )  # fmt: skip
        assert code == 2 and REFUSAL in output
        assert contents(tmp_path) == files

    def test_evaluate(self, tmp_path: Path) -> None:
        files = make_project(tmp_path)
        code, output = agfsync(
            "evaluate", "--base", "tiny:stable-diffusion", "--tuned", "tiny:stable-diffusion",
            "--suite", "dsg", "--prompts-per-suite", "1", "-o", str(tmp_path),
        )  # fmt: skip
        assert code == 2 and REFUSAL in output
        assert contents(tmp_path) == files

    def test_train(self, offline_run: Path, tmp_path: Path) -> None:
        files = make_project(tmp_path)
        code, output = agfsync(
            "train", "--pretrained-model", "tiny:stable-diffusion", "--dataset",
            str(offline_run), "--output", str(tmp_path), "--max-train-steps", "1",
        )  # fmt: skip
        assert code == 2 and REFUSAL in output
        assert contents(tmp_path) == files


class TestOutputPaths:
    def test_an_existing_file(self, tmp_path: Path) -> None:
        (tmp_path / "notes.txt").write_text("mine")
        code, output = agfsync("generate", "-o", str(tmp_path / "notes.txt"))
        assert code == 2 and "is a file, not a folder" in output
        assert (tmp_path / "notes.txt").read_text() == "mine"

    def test_a_folder_nobody_may_write(self) -> None:
        # /sys refuses new entries even to root, so this holds whoever runs the tests.
        code, output = agfsync("generate", "-o", "/sys/agfsync-test-output")
        assert code == 2 and "Cannot write to --output /sys/agfsync-test-output" in output
        assert len(output.strip().splitlines()) == 1

    def test_a_folder_below_a_file(self, tmp_path: Path) -> None:
        (tmp_path / "a-file").write_text("")
        code, output = agfsync("generate", "-o", str(tmp_path / "a-file" / "dataset"))
        assert code == 2 and "Cannot write to --output" in output


class TestOwnership:
    """The rule itself, on folders written by `write_folder`."""

    @staticmethod
    def write(target: Path, files: dict[str, str], **kwargs: object) -> None:
        def fill(staging: Path) -> None:
            for name, text in files.items():
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                (staging / name).write_text(text)

        write_folder(target, FolderKind.DATASET, fill, flag="--output", **kwargs)  # type: ignore[arg-type]

    def test_a_new_folder_gets_a_marker_listing_its_files(self, tmp_path: Path) -> None:
        self.write(tmp_path / "out", {"README.md": "card", "data/a.parquet": "rows"})
        marker = json.loads((tmp_path / "out" / MARKER).read_text())
        assert marker["kind"] == "dataset"
        assert marker["entries"] == ["README.md", "data/a.parquet"]

    def test_replacing_its_own_folder_deletes_only_what_it_wrote(self, tmp_path: Path) -> None:
        out = tmp_path / "out"
        self.write(out, {"README.md": "v1", "data/old.parquet": "old"})
        (out / "report").mkdir()  # another agfsync folder inside: kept
        Ownership(kind=FolderKind.REPORT, entries=["index.html"]).save(out / "report")
        (out / "report" / "index.html").write_text("report")
        self.write(out, {"README.md": "v2", "data/new.parquet": "new"})
        assert contents(out) == {
            MARKER: (out / MARKER).read_bytes(),
            "README.md": b"v2",
            "data/new.parquet": b"new",
            "report/index.html": b"report",
            f"report/{MARKER}": (out / "report" / MARKER).read_bytes(),
        }

    def test_a_file_the_user_added_stops_the_replacement(self, tmp_path: Path) -> None:
        out = tmp_path / "out"
        self.write(out, {"README.md": "v1"})
        (out / "notes.txt").write_text("mine")
        with pytest.raises(ConfigurationError, match="holds files agfsync did not write"):
            self.write(out, {"README.md": "v2"})
        assert (out / "README.md").read_text() == "v1"

    def test_overwrite_writes_beside_the_users_files(self, tmp_path: Path) -> None:
        out = tmp_path / "out"
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        self.write(out, {"README.md": "v1", "data/a": "1"}, overwrite=True)
        self.write(out, {"README.md": "v2", "data/b": "2"}, overwrite=True)
        assert (out / "notes.txt").read_text() == "mine"
        assert sorted(contents(out)) == [MARKER, "README.md", "data/b", "notes.txt"]

    def test_another_kind_is_never_replaced(self, tmp_path: Path) -> None:
        out = tmp_path / "out"
        self.write(out, {"README.md": "card"})
        with pytest.raises(
            ConfigurationError, match="of kind 'dataset', and this command writes kind 'report'"
        ):
            check_output_folder(out, FolderKind.REPORT, flag="-o")

    def test_a_users_partial_folder_is_left_alone(self, tmp_path: Path) -> None:
        (tmp_path / "out.partial").mkdir()
        (tmp_path / "out.partial" / "keep.txt").write_text("mine")
        self.write(tmp_path / "out", {"README.md": "card"})
        assert (tmp_path / "out.partial" / "keep.txt").read_text() == "mine"

    def test_a_failed_write_leaves_the_folder_and_no_staging(self, tmp_path: Path) -> None:
        out = tmp_path / "out"
        self.write(out, {"README.md": "v1"})

        def fail(staging: Path) -> None:
            (staging / "README.md").write_text("half")
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            write_folder(out, FolderKind.DATASET, fail, flag="--output")
        assert (out / "README.md").read_text() == "v1"
        assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]


class TestRunsIntoOwnedFolders:
    """A real run (the offline preset on 2 prompts) writes beside the user's files with
    `--overwrite`, and a re-run replaces its own dataset and nothing else."""

    def test_overwrite_then_rerun(self, tmp_path: Path) -> None:
        out = tmp_path / "mixed"
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        first = run_command(
            ["agfsync", "generate", "--num-prompts", "2", "-o", str(out), "--overwrite"], tmp_path
        )
        assert first.returncode == 0, first.stderr[-2000:]
        first_shards = sorted(path.name for path in (out / "data").iterdir())
        second = run_command(
            ["agfsync", "generate", "--num-prompts", "3", "-o", str(out), "--overwrite"], tmp_path
        )
        assert second.returncode == 0, second.stderr[-2000:]
        shards = sorted(path.name for path in (out / "data").iterdir())
        assert len(shards) == 1 and shards != first_shards  # the old shard went
        assert (out / "notes.txt").read_text() == "mine"
        shutil.rmtree(out)


class TestNoCopiesLeftBehind:
    def test_a_run_leaves_no_rows_in_the_datasets_cache(self, tmp_path: Path) -> None:
        """distilabel loads every step's rows through `load_dataset` at the end of a run;
        those Arrow copies go to a folder of the run's, removed after the write, not to
        the user's `~/.cache/huggingface/datasets`. Nor does a command that reads the
        dataset folder (publish, reselect, argilla) leave its images there."""
        home_cache = tmp_path / "hf-datasets"
        run_cache = tmp_path / "distilabel"
        env = {"HF_DATASETS_CACHE": str(home_cache), "DISTILABEL_CACHE_DIR": str(run_cache)}
        out = tmp_path / "out"
        for command in (
            ["agfsync", "generate", "--num-prompts", "2", "-o", str(out)],
            ["agfsync", "publish", str(out), "--repo-id", "o/n", "--dry-run", str(tmp_path / "d")],
        ):
            result = run_command(command, tmp_path, env=env, fresh_process=True)
            assert result.returncode == 0, result.stderr[-2000:]
            left = [path for path in home_cache.rglob("*") if path.is_file()]
            assert not [path for path in left if not path.name.endswith(".lock")], left
        rows_folders = list(run_cache.rglob("agfsync-rows"))
        assert len(rows_folders) == 1 and not any(rows_folders[0].iterdir())
        assert not list(run_cache.rglob("*.arrow"))


class TestPairsScratch:
    """The folder the pairs stream through while a dataset is written: made new each
    time and the only thing removed after."""

    def test_only_the_folder_it_made_is_removed(self, tmp_path: Path) -> None:
        from agfsync.dataset.folder import pairs_scratch

        parent = tmp_path / "agfsync-pairs"
        parent.mkdir()
        (parent / "yours.txt").write_text("kept")
        with pairs_scratch(parent) as scratch:
            assert scratch.parent == parent and not any(scratch.iterdir())
            (scratch / "pairs.arrow").write_bytes(b"written by datasets")
        assert not scratch.exists()
        assert (parent / "yours.txt").read_text() == "kept"

    def test_building_pairs_refuses_a_folder_with_anything_in_it(self, tmp_path: Path) -> None:
        import datasets

        from agfsync.dataset.folder import build_preference_dataset

        (tmp_path / "yours.txt").write_text("kept")
        rows = datasets.Dataset.from_list([{"prompt": "p", "pair_error": None}])
        with pytest.raises(ValueError, match="not an empty folder"):
            build_preference_dataset(rows, tmp_path, tmp_path)
        assert (tmp_path / "yours.txt").read_text() == "kept"


class TestPresetsExport:
    """`presets export -o` follows the same rule as every output folder."""

    def test_a_users_yaml_is_kept(self, tmp_path: Path) -> None:
        (tmp_path / "offline.yaml").write_text("mine")
        code, output = agfsync("presets", "export", "-o", str(tmp_path))
        assert code == 2 and REFUSAL in output
        assert contents(tmp_path) == {"offline.yaml": b"mine"}

    def test_a_file(self, tmp_path: Path) -> None:
        (tmp_path / "afile").write_text("mine")
        code, output = agfsync("presets", "export", "-o", str(tmp_path / "afile"))
        assert code == 2 and "is a file, not a folder" in output
        assert (tmp_path / "afile").read_text() == "mine"

    def test_an_earlier_export_is_replaced(self, tmp_path: Path) -> None:
        out = tmp_path / "presets"
        assert agfsync("presets", "export", "-o", str(out))[0] == 0
        code, output = agfsync("presets", "export", "-o", str(out))
        assert code == 0, output
        assert (out / "offline.yaml").is_file()


class TestRefusedBeforeThePipeline:
    def test_a_refused_generate_starts_nothing(self, tmp_path: Path) -> None:
        """The output folder is checked before the pipeline is built or run (not only
        when the dataset is written): no distilabel cache, no log, within seconds."""
        import time

        project = tmp_path / "project"
        project.mkdir()
        files = make_project(project)
        cache = tmp_path / "distilabel-cache"
        started = time.monotonic()
        result = run_command(
            ["agfsync", "generate", "--num-prompts", "2", "-o", str(project)],
            tmp_path,
            env={"DISTILABEL_CACHE_DIR": str(cache)},
        )
        elapsed = time.monotonic() - started
        assert result.returncode == 2 and REFUSAL in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "distilabel" not in (result.stdout + result.stderr).lower()
        assert not list(cache.rglob("pipeline.log")) and not list(cache.rglob("*.parquet"))
        assert elapsed < 30
        assert contents(project) == files


class TestUntrustedMarkers:
    """A marker is data from whoever made the folder: paths it lists that leave the
    folder (or run through a link) make the folder not ours, before anything changes."""

    write = staticmethod(TestOwnership.write)

    @staticmethod
    def tamper(folder: Path, *entries: str) -> None:
        marker = json.loads((folder / MARKER).read_text())
        marker["entries"] += list(entries)
        (folder / MARKER).write_text(json.dumps(marker))

    @pytest.mark.parametrize(
        "entry",
        ["../victim/keep.txt", "../victim/", "a/../../victim/", "/ABS/keep.txt", "./x", "a//b"],
    )
    @pytest.mark.parametrize("overwrite", [False, True])
    def test_an_entry_outside_the_folder(self, tmp_path: Path, entry: str, overwrite: bool) -> None:
        victim = tmp_path / "victim"
        victim.mkdir()
        (victim / "keep.txt").write_text("mine")
        out = tmp_path / "out"
        self.write(out, {"README.md": "v1"})
        self.tamper(out, entry.replace("/ABS", str(tmp_path / "victim")))
        before = contents(out)
        with pytest.raises(ConfigurationError, match=NOT_OURS):
            self.write(out, {"README.md": "v2"}, overwrite=overwrite)
        assert (victim / "keep.txt").read_text() == "mine"
        assert contents(out) == before

    def test_the_audits_report_repro(self, offline_run: Path, tmp_path: Path) -> None:
        """A dataset folder received from someone, its report marker listing a path two
        levels up: `agfsync report` refuses and deletes nothing."""
        victim = tmp_path / "victim2"
        victim.mkdir()
        (victim / "keep.txt").write_text("mine")
        received = tmp_path / "a" / "recv"
        shutil.copytree(offline_run, received)
        (received / "report").mkdir(exist_ok=True)
        (received / "report" / "index.html").write_text("old report")
        Ownership(kind=FolderKind.REPORT, entries=["index.html"]).save(received / "report")
        self.tamper(received / "report", "../../victim2/keep.txt")
        code, output = agfsync("report", str(received))
        assert code == 2 and REFUSAL in output
        assert (victim / "keep.txt").read_text() == "mine"

    def test_an_entry_through_a_link(self, tmp_path: Path) -> None:
        outside = tmp_path / "elsewhere"
        outside.mkdir()
        (outside / "a.parquet").write_text("mine")
        out = tmp_path / "out"
        self.write(out, {"README.md": "v1", "data/a.parquet": "rows"})
        shutil.rmtree(out / "data")
        (out / "data").symlink_to(outside)
        for overwrite in (False, True):
            with pytest.raises(ConfigurationError, match=NOT_OURS):
                self.write(out, {"README.md": "v2", "data/b.parquet": "b"}, overwrite=overwrite)
        assert contents(outside) == {"a.parquet": b"mine"}

    def test_removing_a_link_never_follows_it(self, tmp_path: Path) -> None:
        outside = tmp_path / "elsewhere"
        (outside / "sub").mkdir(parents=True)
        (outside / "keep.txt").write_text("mine")
        (outside / "sub" / "keep.txt").write_text("mine")
        out = tmp_path / "out"
        self.write(out, {"README.md": "v1"})
        (out / "images").mkdir()
        (out / "images" / "file").symlink_to(outside / "keep.txt")
        (out / "images" / "folder").symlink_to(outside / "sub")
        (out / "old.txt").symlink_to(outside / "keep.txt")
        self.tamper(out, "images/", "old.txt")
        self.write(out, {"README.md": "v2"})
        assert not (out / "images").exists() and not (out / "old.txt").is_symlink()
        assert contents(outside) == {"keep.txt": b"mine", "sub/keep.txt": b"mine"}


class TestEditedFiles:
    """The marker records each written file's size, time and sha256: a file the user
    edited since is never replaced (with or without --overwrite)."""

    write = staticmethod(TestOwnership.write)

    @pytest.mark.parametrize("overwrite", [False, True])
    def test_an_edited_card_stops_the_rerun(self, tmp_path: Path, overwrite: bool) -> None:
        out = tmp_path / "out"
        self.write(out, {"README.md": "card v1", "data/a": "1"})
        (out / "README.md").write_text("card v1 + my notes")
        with pytest.raises(ConfigurationError, match=r"README.md changed since agfsync wrote"):
            self.write(out, {"README.md": "card v2", "data/a": "2"}, overwrite=overwrite)
        assert (out / "README.md").read_text() == "card v1 + my notes"
        assert (out / "data" / "a").read_text() == "1"

    def test_a_copied_folder_is_still_ours(self, tmp_path: Path) -> None:
        """A copy changes the files' times, not their content."""
        out = tmp_path / "out"
        self.write(out, {"README.md": "card v1"})
        copy = tmp_path / "copy"
        shutil.copytree(out, copy, copy_function=shutil.copy)
        os_utime_later(copy / "README.md")
        self.write(copy, {"README.md": "card v2"})
        assert (copy / "README.md").read_text() == "card v2"


def os_utime_later(path: Path) -> None:
    import os

    status = path.stat()
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))


def test_output_folders_get_the_umasks_mode(tmp_path: Path) -> None:
    """Not `mkdtemp`'s 0700: other users of a shared machine may read a dataset."""
    import os

    previous = os.umask(0o022)
    try:
        TestOwnership.write(tmp_path / "out", {"README.md": "card"})
    finally:
        os.umask(previous)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755
