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
from agfsync.ownership import (
    MARKER,
    STAGING_SUFFIX,
    FolderKind,
    Ownership,
    check_output_folder,
    write_folder,
)
from tests.helpers import run_command, write_files

runner = CliRunner()


def make_project(folder: Path) -> dict[str, bytes]:
    """A user's project: files agfsync must never lose. Returns their contents."""
    files = {
        "README.md": b"# my project\n",
        "src/main.py": b"print('hello')\n",
        "thesis.tex": b"\\documentclass{article}\n",
    }
    write_files(folder, files)
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
            write_files(staging, files)

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
        """Links agfsync wrote (recorded by where they point) are removed as links."""
        outside = tmp_path / "elsewhere"
        (outside / "sub").mkdir(parents=True)
        (outside / "keep.txt").write_text("mine")
        (outside / "sub" / "keep.txt").write_text("mine")
        out = tmp_path / "out"

        def with_links(staging: Path) -> None:
            (staging / "README.md").write_text("v1")
            (staging / "artifacts").mkdir()
            (staging / "artifacts" / "file").symlink_to(outside / "keep.txt")
            (staging / "artifacts" / "folder").symlink_to(outside / "sub")

        write_folder(out, FolderKind.DATASET, with_links, flag="-o")
        self.write(out, {"README.md": "v2"})
        assert not (out / "artifacts").exists()
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


def forge(folder: Path, **record: object) -> None:
    """A marker written by someone else (or edited by hand)."""
    (folder / MARKER).write_text(json.dumps({"written_by": "agfsync", **record}))


class TestForgedMarkers:
    """A marker can only ever make agfsync replace what its kind writes, and a listed
    file only while it is the file agfsync recorded."""

    write = staticmethod(TestOwnership.write)

    @pytest.mark.parametrize("overwrite", [False, True])
    def test_a_folder_entry_of_the_users(self, tmp_path: Path, overwrite: bool) -> None:
        """The review's repro: a dataset marker listing `thesis/` deleted it."""
        out = tmp_path / "out"
        (out / "thesis").mkdir(parents=True)
        (out / "thesis" / "chapter1.tex").write_text("mine")
        forge(out, kind="dataset", entries=["thesis/"])
        before = contents(out)
        with pytest.raises(ConfigurationError, match=NOT_OURS):
            self.write(out, {"README.md": "card"}, overwrite=overwrite)
        assert contents(out) == before

    @pytest.mark.parametrize("entry", ["data/", "artifacts/", "assets/"])
    def test_a_folder_entry_in_a_kind_written_whole(self, tmp_path: Path, entry: str) -> None:
        """write_folder lists files only: even a declared folder is no entry of its."""
        out = tmp_path / "out"
        (out / entry).mkdir(parents=True)
        (out / entry / "mine.bin").write_text("mine")
        forge(out, kind="dataset", entries=[entry])
        with pytest.raises(ConfigurationError, match=NOT_OURS):
            self.write(out, {"README.md": "card"})
        assert (out / entry / "mine.bin").read_text() == "mine"

    def test_a_file_outside_the_kinds_names(self, tmp_path: Path) -> None:
        from agfsync.ownership import fingerprint

        out = tmp_path / "out"
        out.mkdir()
        (out / "thesis.tex").write_text("mine")
        forge(
            out,
            kind="dataset",
            entries=["thesis.tex"],
            files={"thesis.tex": fingerprint(out / "thesis.tex")},
        )
        with pytest.raises(ConfigurationError, match=NOT_OURS):
            self.write(out, {"README.md": "card"})
        assert (out / "thesis.tex").read_text() == "mine"

    @pytest.mark.parametrize("overwrite", [False, True])
    def test_a_listed_file_without_a_fingerprint(self, tmp_path: Path, overwrite: bool) -> None:
        """Nothing tells it is agfsync's: never replaced, named in the refusal."""
        out = tmp_path / "out"
        out.mkdir()
        (out / "README.md").write_text("my own card")
        (out / "run.json").write_text("{}")
        forge(out, kind="dataset", entries=["README.md", "run.json"])
        with pytest.raises(ConfigurationError, match=r"README.md, run.json is listed .* without"):
            self.write(out, {"README.md": "card"}, overwrite=overwrite)
        assert (out / "README.md").read_text() == "my own card"
        assert (out / "run.json").read_text() == "{}"

    def test_a_stale_file_without_a_fingerprint_is_not_deleted(self, tmp_path: Path) -> None:
        out = tmp_path / "out"
        self.write(out, {"README.md": "v1"})
        (out / "pipeline.log").write_text("my notes")
        marker = json.loads((out / MARKER).read_text())
        marker["entries"].append("pipeline.log")
        (out / MARKER).write_text(json.dumps(marker))
        with pytest.raises(ConfigurationError, match=r"pipeline.log is listed"):
            self.write(out, {"README.md": "v2"})
        assert (out / "pipeline.log").read_text() == "my notes"

    def test_a_training_marker_may_list_only_training_folders(self, tmp_path: Path) -> None:
        from agfsync.ownership import claim_folder

        out = tmp_path / "out"
        (out / "thesis").mkdir(parents=True)
        (out / "thesis" / "chapter1.tex").write_text("mine")
        forge(out, kind="training", entries=["thesis/", "checkpoint-*/"])
        with pytest.raises(ConfigurationError, match=NOT_OURS):
            claim_folder(out, FolderKind.TRAINING, flag="--output")
        forge(out, kind="training", entries=["checkpoint-*/", "logs/"])
        with pytest.raises(ConfigurationError, match="holds files agfsync did not write"):
            claim_folder(out, FolderKind.TRAINING, flag="--output")

    def test_every_kinds_names_are_its_commands_names(self) -> None:
        from agfsync.dataset.folder import DATASET_ENTRIES
        from agfsync.evaluation.report import REPORT_ENTRIES
        from agfsync.evaluation.run import EVALUATION_ENTRIES
        from agfsync.ownership import KINDS
        from agfsync.review.calibration import CALIBRATION_FILE, REPORT_FILE, WEIGHTS_FILE
        from agfsync.train.loop import TRAINING_ENTRIES

        assert set(KINDS[FolderKind.DATASET].entries) == set(DATASET_ENTRIES)
        assert set(KINDS[FolderKind.PUBLICATION].entries) == set(DATASET_ENTRIES)
        assert set(KINDS[FolderKind.REPORT].entries) == set(REPORT_ENTRIES)
        assert set(KINDS[FolderKind.EVALUATION].entries) == set(EVALUATION_ENTRIES)
        assert set(KINDS[FolderKind.TRAINING].entries) == set(TRAINING_ENTRIES)
        assert set(KINDS[FolderKind.CALIBRATION].entries) == {
            CALIBRATION_FILE,
            WEIGHTS_FILE,
            REPORT_FILE,
        }


class TestInterruptedCommit:
    """A stop while the files are moved into place: the next run finishes the folder."""

    write = staticmethod(TestOwnership.write)

    @staticmethod
    def stop_at(monkeypatch: pytest.MonkeyPatch, name: str, error: BaseException) -> None:
        import agfsync.ownership as ownership

        real = ownership.os.replace

        def replace(source: object, destination: object) -> None:
            if Path(str(destination)).name == name:
                raise error
            real(source, destination)  # type: ignore[arg-type]

        monkeypatch.setattr(ownership.os, "replace", replace)

    @pytest.mark.parametrize("at", ["README.md", "a.parquet"])
    def test_ctrl_c_while_moving(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at: str
    ) -> None:
        out = tmp_path / "out"
        self.write(out, {"README.md": "v1", "data/a.parquet": "1", "run.json": "old"})
        with monkeypatch.context() as patch:
            self.stop_at(patch, at, KeyboardInterrupt())
            with pytest.raises(KeyboardInterrupt):
                self.write(out, {"README.md": "v2", "data/a.parquet": "2"})
        self.write(out, {"README.md": "v2", "data/a.parquet": "2"})
        assert contents(out) == {
            MARKER: (out / MARKER).read_bytes(),
            "README.md": b"v2",
            "data/a.parquet": b"2",
        }
        assert "previous" not in json.loads((out / MARKER).read_text())

    def test_an_edit_after_the_stop_is_still_refused(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        out = tmp_path / "out"
        self.write(out, {"README.md": "v1", "data/a.parquet": "1"})
        with monkeypatch.context() as patch:
            self.stop_at(patch, "a.parquet", KeyboardInterrupt())
            with pytest.raises(KeyboardInterrupt):
                self.write(out, {"README.md": "v2", "data/a.parquet": "2"})
        (out / "data" / "a.parquet").write_text("my edit")
        with pytest.raises(ConfigurationError, match=r"a.parquet changed since agfsync wrote"):
            self.write(out, {"README.md": "v3", "data/a.parquet": "3"})
        assert (out / "data" / "a.parquet").read_text() == "my edit"

    def test_an_os_error_while_moving_says_what_state_the_folder_is_in(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        out = tmp_path / "out"
        self.write(out, {"README.md": "v1", "data/a.parquet": "1"})
        with monkeypatch.context() as patch:
            self.stop_at(patch, "a.parquet", OSError(28, "No space left on device"))
            with pytest.raises(ConfigurationError) as raised:
                self.write(out, {"README.md": "v2", "data/a.parquet": "2"})
        message = str(raised.value)
        assert "nothing was changed" not in message
        assert "No space left on device" in message and "run the same command again" in message
        assert "finishes" in message
        self.write(out, {"README.md": "v2", "data/a.parquet": "2"})
        assert (out / "data" / "a.parquet").read_text() == "2"


def test_overwrite_refuses_a_users_file_where_agfsync_writes_aside(tmp_path: Path) -> None:
    """`.agfsync-partial/` is where a claimed folder writes a file before moving it into
    place (`OwnedFolder.write_file`): a user's file there is taken, not overwritten."""
    out = tmp_path / "evaluation"
    (out / ".agfsync-partial").mkdir(parents=True)
    (out / ".agfsync-partial" / "metrics.json").write_text("mine")
    with pytest.raises(ConfigurationError, match=r"agfsync-partial/metrics\.json, which agfsync"):
        check_output_folder(out, FolderKind.EVALUATION, flag="-o", overwrite=True)
    assert (out / ".agfsync-partial" / "metrics.json").read_text() == "mine"


class TestStagingPlace:
    """A folder written whole is staged beside the target: checked before any work."""

    def test_a_mount_point_is_refused(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import os

        volume = tmp_path / "volume"
        volume.mkdir()
        real = os.path.ismount
        monkeypatch.setattr(os.path, "ismount", lambda path: Path(path) == volume or real(path))
        with pytest.raises(ConfigurationError, match="is a mount point") as raised:
            check_output_folder(volume, FolderKind.DATASET, flag="--output")
        assert str(volume / "dataset") in str(raised.value)
        # Filled in place: a mount point is fine.
        check_output_folder(volume, FolderKind.EVALUATION, flag="--output")

    def test_another_device_than_the_parent_is_refused(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import os

        out = tmp_path / "out"
        TestOwnership.write(out, {"README.md": "v1"})
        real_stat = Path.stat

        class Other:
            def __init__(self, status: os.stat_result) -> None:
                self._status = status

            def __getattr__(self, name: str) -> object:
                return self._status.st_dev + 1 if name == "st_dev" else getattr(self._status, name)

        def stat(path: Path, **kwargs: object) -> object:
            status = real_stat(path, **kwargs)  # type: ignore[arg-type]
            return Other(status) if path == out else status

        monkeypatch.setattr(Path, "stat", stat)
        with pytest.raises(ConfigurationError, match="is a mount point"):
            TestOwnership.write(out, {"README.md": "v2"})
        monkeypatch.undo()
        assert (out / "README.md").read_text() == "v1"

    def test_a_parent_that_does_not_accept_files(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`-o /scratch/$USER` where only $USER is writable (root ignores modes: the probe
        is made to fail there)."""
        import agfsync.ownership as ownership

        mine = tmp_path / "scratch" / "me"
        mine.mkdir(parents=True)
        real = ownership._probe

        def probe(folder: Path) -> OSError | None:
            if folder == mine.parent:
                return PermissionError(13, "Permission denied")
            return real(folder)

        monkeypatch.setattr(ownership, "_probe", probe)
        with pytest.raises(ConfigurationError) as raised:
            check_output_folder(mine, FolderKind.DATASET, flag="--output")
        message = str(raised.value)
        assert message.startswith(f"Cannot write to --output {mine}: agfsync writes the dataset")
        assert "Permission denied" in message and str(mine / "dataset") in message
        assert "\n" not in message

    def test_a_staging_folder_that_cannot_be_made_is_a_one_line_refusal(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import tempfile

        def refuse(*args: object, **kwargs: object) -> str:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(tempfile, "mkdtemp", refuse)
        with pytest.raises(ConfigurationError, match=r"Permission denied.*nothing was changed"):
            TestOwnership.write(tmp_path / "out", {"README.md": "card"})
        assert not (tmp_path / "out").exists()


class TestFoldersFilledInPlace:
    """Evaluation and training folders record their files' fingerprints once written."""

    def test_an_edited_metrics_file_is_never_replaced(self, tmp_path: Path) -> None:
        from agfsync.ownership import claim_folder

        out = tmp_path / "eval"
        owned = claim_folder(out, FolderKind.EVALUATION, flag="--output")
        owned.add("images/", "report/")
        owned.write_file("metrics.json", lambda path: path.write_text("{}"))
        claim_folder(out, FolderKind.EVALUATION, flag="--output")  # unchanged: ours
        (out / "metrics.json").write_text('{"my": "notes"}')
        for overwrite in (False, True):
            with pytest.raises(ConfigurationError, match=r"metrics.json changed since agfsync"):
                claim_folder(out, FolderKind.EVALUATION, flag="--output", overwrite=overwrite)
        assert (out / "metrics.json").read_text() == '{"my": "notes"}'

    def test_a_claimed_file_name_is_the_users_until_written(self, tmp_path: Path) -> None:
        """Claimed up front, a file agfsync has not recorded yet is not taken for its own."""
        from agfsync.ownership import claim_folder

        out = tmp_path / "eval"
        claim_folder(out, FolderKind.EVALUATION, flag="--output").add("metrics.json", "images/")
        (out / "metrics.json").write_text("mine")
        with pytest.raises(ConfigurationError, match=r"metrics.json is listed"):
            claim_folder(out, FolderKind.EVALUATION, flag="--output")

    def test_a_stop_while_replacing_a_file_keeps_the_folder_ours(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import agfsync.ownership as ownership
        from agfsync.ownership import claim_folder

        out = tmp_path / "eval"
        owned = claim_folder(out, FolderKind.EVALUATION, flag="--output")
        owned.write_file("metrics.json", lambda path: path.write_text("v1"))

        def stop(*args: object) -> None:
            raise KeyboardInterrupt

        owned = claim_folder(out, FolderKind.EVALUATION, flag="--output")
        with monkeypatch.context() as patch:
            patch.setattr(ownership.os, "replace", stop)
            with pytest.raises(KeyboardInterrupt):
                owned.write_file("metrics.json", lambda path: path.write_text("v2"))
        assert (out / "metrics.json").read_text() == "v1"
        # What a kill -9 leaves: a partial file in the folder's own scratch.
        (out / ".agfsync-partial").mkdir(exist_ok=True)
        (out / ".agfsync-partial" / "metrics.json").write_text("half")
        claim_folder(out, FolderKind.EVALUATION, flag="--output").write_file(
            "metrics.json", lambda path: path.write_text("v3")
        )
        assert (out / "metrics.json").read_text() == "v3"
        assert sorted(path.name for path in out.iterdir()) == [MARKER, "metrics.json"]

    def test_an_undeclared_name_is_a_bug(self, tmp_path: Path) -> None:
        from agfsync.ownership import claim_folder

        owned = claim_folder(tmp_path / "eval", FolderKind.EVALUATION, flag="--output")
        with pytest.raises(ValueError, match=r"may not hold notes.txt"):
            owned.add("notes.txt")


class TestPatternsAndUmask:
    def test_only_star_is_a_wildcard_in_an_entry(self) -> None:
        from agfsync.ownership import matches

        assert matches("checkpoint-12/optimizer.bin", "checkpoint-*/")
        assert not matches("logs-a/x", "logs-?*/")
        assert matches("logs-?a/x", "logs-?*/")
        assert not matches("a1", "[a]*")
        assert matches("[a]1", "[a]*")

    def test_abandoned_staging_of_a_name_with_brackets_is_removed(self, tmp_path: Path) -> None:
        import subprocess

        gone = subprocess.Popen(["true"])
        gone.wait()
        target = tmp_path / "out[1]"
        abandoned = tmp_path / f".out[1].abc{STAGING_SUFFIX}"
        other = tmp_path / f".out1.abc{STAGING_SUFFIX}"
        for folder in (abandoned, other):
            folder.mkdir()
            Ownership(kind="staging", pid=gone.pid).save(folder)
        TestOwnership.write(target, {"README.md": "card"})
        assert not abandoned.exists()
        assert other.exists()  # another target's

    def test_folder_mode_leaves_the_umask_alone(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import os

        from agfsync.ownership import folder_mode

        current = os.umask(0o022)
        os.umask(current)

        def forbidden(mask: int) -> int:
            raise AssertionError("os.umask changed")

        monkeypatch.setattr(os, "umask", forbidden)
        assert folder_mode() == 0o777 & ~current


class TestTrainingFolders:
    """A real (tiny) training run records its model card and weights: a re-run into the
    folder (resuming, training longer) replaces them only while unchanged."""

    def test_an_edited_model_card_stops_the_next_run_into_the_folder(
        self, tiny_sd_path: str, tmp_path: Path
    ) -> None:
        from agfsync.train.config import DPOTrainingConfig
        from agfsync.train.loop import train
        from tests.test_train_data import write_colour_preference_dataset

        dataset = str(write_colour_preference_dataset(tmp_path / "ds"))
        out = tmp_path / "run"

        def config(steps: int) -> DPOTrainingConfig:
            return DPOTrainingConfig(
                pretrained_model=tiny_sd_path,
                dataset=dataset,
                output_dir=out,
                train_batch_size=4,
                effective_batch_size=4,
                max_train_steps=steps,
                report_to="none",
                validation_steps=0,
                lr_scheduler="constant",
                checkpointing_steps=1,
                resume_from_checkpoint="latest",
            )

        train(config(1))
        marker = json.loads((out / MARKER).read_text())
        assert {"README.md", "pytorch_lora_weights.safetensors"} <= set(marker["files"])
        train(config(2))  # unchanged: replaced
        card = (out / "README.md").read_text()
        (out / "README.md").write_text(card + "\nmy notes\n")
        for overwrite in (False, True):
            with pytest.raises(ConfigurationError, match=r"README.md changed since agfsync"):
                train(config(3).model_copy(update={"overwrite": overwrite}))
        assert (out / "README.md").read_text() == card + "\nmy notes\n"
