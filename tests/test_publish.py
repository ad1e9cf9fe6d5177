"""`agfsync publish` against a loopback Hub, read back with the real clients.

Publishing and loading run in fresh processes: `datasets` and `huggingface_hub`
read `HF_ENDPOINT` at import, and this test process has them imported offline.
"""

import hashlib
import io
import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import datasets
import pyarrow.parquet as pq
import pytest
import yaml
from pytest_httpserver import HTTPServer

from agfsync.dataset.folder import write_dataset_folder
from agfsync.dataset.run_info import RunInfo, UnpairedPrompt
from agfsync.ownership import MARKER
from tests.helpers import REPO_ROOT, card_listing, closed_port, generate_offline_run, run_command
from tests.hub_server import HubServer

pytestmark = pytest.mark.slow  # `make test-fast` skips this module

TOKEN = "hf_test_secret_token_4242"
NUM_PROMPTS = 4


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_offline_run(tmp_path_factory.mktemp("publish") / "run", NUM_PROMPTS)


@pytest.fixture
def hub() -> Iterator[HubServer]:
    server = HubServer().start()
    yield server
    server.stop()


def hub_env(endpoint: str, home: Path) -> dict[str, str]:
    return {
        "HF_ENDPOINT": endpoint,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(home),
        "HF_TOKEN": TOKEN,
    }


def publish(run_dir: Path, hub: HubServer, tmp_path: Path, *args: str) -> str:
    result = run_command(
        ["agfsync", "publish", str(run_dir), "--repo-id", "org/pairs", "--retries", "0", *args],
        cwd=tmp_path,
        env=hub_env(hub.url, tmp_path / "hf"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


LOAD_BACK = """
import json, sys
import datasets
from huggingface_hub import DatasetCard
from tests.diffusers_dpo import read_like_diffusers

split, repo_id = sys.argv[1:]
images = datasets.load_dataset(repo_id, "images", split=split)
print(json.dumps({
    **read_like_diffusers(repo_id, split),
    "columns": images.column_names,
    "image_features": [type(images.features[c]).__name__ for c in ("jpg_0", "jpg_1")],
    "size": list(images[0]["jpg_0"].size),
    "prompt_ids": list(images["prompt_id"]),
    "card": DatasetCard.load(repo_id, repo_type="dataset").data.to_dict(),
}))
"""
"""Reads a published dataset as diffusers' DPO scripts do (default config: bytes), and
with decoded images as the Hub viewer and `datasets` users do (the `images` config)."""


READ_LIKE_DIFFUSERS = """
import json, sys
import datasets
from tests.diffusers_dpo import read_like_diffusers

(repo_id,) = sys.argv[1:]
rows = datasets.load_dataset(repo_id, split="train")
print(json.dumps({
    **read_like_diffusers(repo_id),
    "columns": rows.column_names,
    "prompt_ids": list(rows["prompt_id"][:4]),
}))
"""
"""diffusers' DPO scripts on a repo pushed by `distilabel pipeline run --repo-id` (its
default config is the pair config)."""


def load_back(
    hub: HubServer, tmp_path: Path, split: str = "train", repo_id: str = "org/pairs"
) -> dict:
    result = run_command(
        ["python", "-c", LOAD_BACK, split, repo_id],
        cwd=REPO_ROOT,
        env=hub_env(hub.url, tmp_path / "hf-load"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def train_by_repo_id(repo_id: str, hub: HubServer, tmp_path: Path) -> str:
    """One LoRA step of `agfsync train` on the published dataset; its log."""
    trained = run_command(
        [
            *("agfsync", "train", "--pretrained-model", "tiny:stable-diffusion"),
            *("--dataset", repo_id, "--max-train-steps", "1", "--train-batch-size", "2"),
            *("--effective-batch-size", "2", "--validation-steps", "0"),
            *("--report-to", "none", "--output", "out"),
        ],
        cwd=tmp_path,
        env=hub_env(hub.url, tmp_path / "hf"),
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (tmp_path / "out" / "pytorch_lora_weights.safetensors").is_file()
    return trained.stderr


def local_rows(run_dir: Path) -> datasets.Dataset:
    files = [str(path) for path in sorted((run_dir / "data").glob("*.parquet"))]
    return datasets.load_dataset("parquet", data_files=files, split="train")


class TestPublish:
    def test_published_dataset_loads_back_with_images_scores_and_card(
        self, run_dir: Path, hub: HubServer, tmp_path: Path
    ) -> None:
        publish(run_dir, hub, tmp_path)
        loaded = load_back(hub, tmp_path)

        local = local_rows(run_dir)
        assert loaded["rows"] == NUM_PROMPTS == len(local)
        assert loaded["prompt_ids"] == list(local["prompt_id"])
        assert loaded["jpg_0_sha"] == [hashlib.sha256(row["jpg_0"]).hexdigest() for row in local]
        # diffusers' scripts: 6-channel pairs (jpg_0 then jpg_1), SDXL sizes from jpg_0
        assert loaded["sd15_shapes"] == loaded["sdxl_shapes"] == [[6, 32, 32]] * NUM_PROMPTS
        assert loaded["sdxl_original_sizes"] == [[32, 32]] * NUM_PROMPTS
        assert loaded["captions"] == list(local["prompt"]) and loaded["labels"] == [1.0] * 4
        assert loaded["image_features"] == ["Image"] * 2  # the viewer's config
        assert loaded["size"] == [32, 32]
        for column in ("caption", "label_0", "qa_pairs", "image_seeds", "noise_sigmas"):
            assert column in loaded["columns"]
        for column in ("vqa_scores", "clip_scores", "aesthetic_scores", "weighted_scores"):
            assert column in loaded["columns"]

        card = loaded["card"]
        assert card["license"] == "apache-2.0"  # the tiny model's: agfsync's own
        assert card["task_categories"] == ["text-to-image"]
        assert card["size_categories"] == ["n<1K"]
        assert card["language"] == ["en"] and "rlaif" in card["tags"]
        assert [config["config_name"] for config in card["configs"]] == ["default", "images"]
        assert card["configs"][0]["data_files"][0]["split"] == "train"
        features = {info["config_name"]: info["features"] for info in card["dataset_info"]}
        jpg_0 = {f["name"]: f.get("dtype") for f in features["images"]}["jpg_0"]
        assert (
            jpg_0 == "image"
            and {f["name"]: f.get("dtype") for f in features["default"]}["jpg_0"] == "binary"
        )

        files = hub.files("org/pairs")
        assert {"README.md", "pipeline.yaml", "run.json"} <= set(files)
        readme = files["README.md"].decode()
        for figure in ("score_distributions.png", "score_margins.png", "categories.png"):
            assert f"assets/{figure}" in readme
            assert files[f"assets/{figure}"].startswith(b"\x89PNG")
        assert "--dataset_name org/pairs --dataset_split_name train" in readme
        assert 'load_dataset("org/pairs", "images", split="train")' in readme
        assert "conversion rate" in readme and "Limitations and biases" in readme

    def test_republishing_makes_one_commit_and_replaces_stale_shards(
        self, run_dir: Path, hub: HubServer, tmp_path: Path
    ) -> None:
        publish(run_dir, hub, tmp_path)
        first = hub.files("org/pairs")
        commits = hub.commit_count("org/pairs")

        publish(run_dir, hub, tmp_path)
        assert hub.commit_count("org/pairs") == commits + 1
        assert hub.files("org/pairs") == first

        smaller = generate_offline_run(tmp_path / "smaller", 2)
        output = publish(smaller, hub, tmp_path)
        # the old shard and the third sample pair, chosen and rejected (two prompts give
        # two samples)
        assert "3 stale files deleted" in output
        assert not any(path.startswith("assets/samples/pair-2") for path in hub.files("org/pairs"))
        shards = [path for path in hub.files("org/pairs") if path.startswith("data/")]
        assert len(shards) == 1 and shards[0] not in first
        assert load_back(hub, tmp_path)["rows"] == 2

    def test_the_published_dataset_trains_by_repo_id(
        self, run_dir: Path, hub: HubServer, tmp_path: Path
    ) -> None:
        publish(run_dir, hub, tmp_path)
        assert f"{NUM_PROMPTS} pairs, 0 ties removed" in train_by_repo_id(
            "org/pairs", hub, tmp_path
        )

    def test_another_split_keeps_the_first(
        self, run_dir: Path, hub: HubServer, tmp_path: Path
    ) -> None:
        publish(run_dir, hub, tmp_path)
        publish(run_dir, hub, tmp_path, "--split", "test")
        card = yaml.safe_load(hub.files("org/pairs")["README.md"].decode().split("---")[1])
        splits = {entry["split"] for entry in card["configs"][0]["data_files"]}
        assert splits == {"train", "test"}
        assert load_back(hub, tmp_path, "test")["rows"] == NUM_PROMPTS
        assert load_back(hub, tmp_path, "train")["rows"] == NUM_PROMPTS

    def test_dry_run_writes_exactly_the_uploaded_files_and_no_token(
        self, run_dir: Path, hub: HubServer, tmp_path: Path
    ) -> None:
        dry = tmp_path / "dry"
        result = run_command(
            ["agfsync", "publish", str(run_dir), "--repo-id", "org/pairs", "--dry-run", str(dry)],
            cwd=tmp_path,
            env={"HF_TOKEN": TOKEN},
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert hub.requests == []
        publish(run_dir, hub, tmp_path)
        uploaded = hub.files("org/pairs")
        written = {
            path.relative_to(dry).as_posix(): path.read_bytes()
            for path in dry.rglob("*")
            if path.is_file() and path.name != MARKER  # agfsync's own, never uploaded
        }
        assert set(written) == set(uploaded)
        for path in ("README.md", "run.json", "pipeline.yaml"):
            assert written[path] == uploaded[path]
        for content in [*written.values(), *uploaded.values()]:
            assert TOKEN.encode() not in content


def dry_run(folder: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return run_command(
        ["agfsync", "publish", str(folder), "--repo-id", "o/n", "--dry-run", str(tmp_path / "d")],
        tmp_path,
    )


class TestPublishFailures:
    def test_without_a_token_nothing_is_sent(self, run_dir: Path, tmp_path: Path) -> None:
        hub = HubServer().start()
        try:
            env = hub_env(hub.url, tmp_path / "hf")
            env["HF_TOKEN"] = ""
            result = run_command(
                ["agfsync", "publish", str(run_dir), "--repo-id", "org/pairs"], tmp_path, env
            )
        finally:
            hub.stop()
        assert result.returncode == 2
        assert "set HF_TOKEN, pass --hub-token or run `hf auth login`" in result.stderr
        assert hub.requests == []

    def test_the_token_hf_auth_login_stored_is_used(
        self, run_dir: Path, hub: HubServer, tmp_path: Path
    ) -> None:
        env = hub_env(hub.url, tmp_path / "hf") | {"HF_TOKEN": ""}
        (tmp_path / "hf").mkdir()
        (tmp_path / "hf" / "token").write_text(TOKEN)  # where `hf auth login` keeps it
        result = run_command(
            ["agfsync", "publish", str(run_dir), "--repo-id", "org/pairs", "--retries", "0"],
            tmp_path,
            env,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"Bearer {TOKEN}" in hub.authorizations
        assert TOKEN not in result.stdout + result.stderr

    def test_unreachable_hub_gives_a_clear_message(self, run_dir: Path, tmp_path: Path) -> None:
        env = hub_env(f"http://127.0.0.1:{closed_port()}", tmp_path / "hf")
        result = run_command(
            ["agfsync", "publish", str(run_dir), "--repo-id", "org/pairs", "--retries", "0"],
            tmp_path,
            env,
        )
        assert result.returncode == 1, result.stderr[-3000:]
        assert "Publishing to org/pairs failed after 1 attempt(s)" in result.stderr
        assert "the repository is unchanged" in result.stderr
        assert "Traceback" not in result.stderr

    def test_a_failed_commit_leaves_the_repo_unchanged_and_a_retry_succeeds(
        self, run_dir: Path, hub: HubServer, tmp_path: Path
    ) -> None:
        publish(run_dir, hub, tmp_path)
        before = hub.commit_count("org/pairs")
        hub.failing_commits = 1
        failed = run_command(
            ["agfsync", "publish", str(run_dir), "--repo-id", "org/pairs", "--retries", "0"],
            tmp_path,
            hub_env(hub.url, tmp_path / "hf"),
        )
        assert failed.returncode == 1
        assert "HTTP 500" in failed.stderr and "No commit was made" in failed.stderr
        assert hub.commit_count("org/pairs") == before
        hub.failing_commits = 1
        publish(run_dir, hub, tmp_path, "--retries", "1")
        assert hub.commit_count("org/pairs") == before + 1

    def test_a_rate_limited_publish_waits_as_long_as_the_hub_asks(
        self, run_dir: Path, hub: HubServer, tmp_path: Path
    ) -> None:
        """Without the hint the first retry would come within 1 s (`agfsync.retry`)."""
        hub.rate_limited_commits, hub.retry_after = 1, "3"
        publish(run_dir, hub, tmp_path, "--retries", "1")
        assert "README.md" in hub.files("org/pairs")
        refused, accepted = hub.commit_attempts
        assert accepted - refused >= 3

    def test_a_full_disk_while_staging_uploads_nothing_and_a_retry_succeeds(
        self, run_dir: Path, hub: HubServer, tmp_path: Path
    ) -> None:
        """The shards are staged in TMPDIR before anything is sent; a disk that fills up
        there stops the publish before the repo is even created."""
        staging = tmp_path / "tmp"
        staging.mkdir()
        env = {**hub_env(hub.url, tmp_path / "hf"), "TMPDIR": str(staging)}
        failed = run_command(
            [
                *("python", "-m", "tests.fault_driver", "disk-full-when-writing-parquet"),
                *("publish", str(run_dir), "--repo-id", "org/pairs", "--retries", "0"),
            ],
            cwd=REPO_ROOT,
            env=env,
        )
        assert failed.returncode == 2, failed.stderr[-3000:]
        message = failed.stderr.strip().splitlines()[-1]
        assert "No space left on device" in message
        assert "Nothing was uploaded: org/pairs is unchanged" in message
        assert "set TMPDIR" in message and "Traceback" not in failed.stderr
        assert hub.repos == {} and list(staging.iterdir()) == []

        publish(run_dir, hub, tmp_path)
        assert any(path.startswith("data/train-") for path in hub.files("org/pairs"))

    def test_a_run_without_pairs_is_refused(self, run_dir: Path, tmp_path: Path) -> None:
        empty = tmp_path / "empty"
        rows = local_rows(run_dir).select([])
        write_dataset_folder(rows, empty, card=card_listing)
        RunInfo(
            preset="offline",
            seed=0,
            unpaired=[UnpairedPrompt(prompt_id="p", prompt="x", category=None, reason="tie")],
        ).save(empty)
        result = dry_run(empty, tmp_path)
        assert result.returncode == 2
        assert "holds no preference pairs (1 prompts without a pair: tie)" in result.stderr

    def test_an_unreadable_image_names_its_prompt(self, run_dir: Path, tmp_path: Path) -> None:
        broken = tmp_path / "broken"
        shutil.copytree(run_dir, broken)
        rows = local_rows(broken)
        bad_id = rows[1]["prompt_id"]

        def corrupt(row: dict, index: int) -> dict:
            if index == 1:
                row["jpg_0"] = b"not an image"
            return row

        rows = rows.map(corrupt, with_indices=True)
        (shard,) = (broken / "data").glob("*.parquet")
        rows.to_parquet(broken / "shard.parquet")
        (broken / "shard.parquet").replace(shard)
        result = dry_run(broken, tmp_path)
        assert result.returncode == 2
        assert f"Image `jpg_0` of prompt {bad_id!r} is missing or unreadable" in result.stderr
        assert "Nothing was published" in result.stderr

    def test_a_folder_that_is_not_a_run_is_refused(self, tmp_path: Path) -> None:
        result = dry_run(tmp_path, tmp_path)
        assert result.returncode == 2
        assert "has no run.json" in result.stderr


def distilabel_run_read_like_diffusers(
    hub: HubServer, tmp_path: Path, repo_id: str, *, num_prompts: int, image_model: str = ""
) -> tuple[list[dict], dict]:
    """`distilabel pipeline run --repo-id` on the offline preset (its image model
    replaced by `image_model` if given), then diffusers' scripts' reading of it: (the
    leaf step's rows, what `read_like_diffusers` saw). The scripts' winner, `jpg_0` of
    every labelled pair, is checked against the chosen candidate's file under artifacts/."""
    shutil.copy(REPO_ROOT / "pipelines" / "offline.yaml", tmp_path / "offline.yaml")
    env = {**hub_env(hub.url, tmp_path / "hf"), "DISTILABEL_CACHE_DIR": str(tmp_path / "cache")}
    params = [f"load_prompts.num_prompts={num_prompts}"]
    if image_model:
        params.append(f"generate_images.model={image_model}")
    result = run_command(
        [
            "distilabel", "pipeline", "run", "--config", "offline.yaml",
            *(part for param in params for part in ("--param", param)), "--repo-id", repo_id,
        ],
        tmp_path,
        env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    files = hub.files(repo_id)
    assert {"README.md", "pipeline.yaml"} <= set(files)
    raw_shards = [path for path in files if path.startswith("export_pairs/")]
    raw = pq.read_table(io.BytesIO(files[raw_shards[0]])).to_pylist()
    chosen_sha = {}
    for row in raw:
        for index in (row["chosen_index"], row["rejected_index"]):
            assert files["artifacts/" + row["image_paths"][index]].startswith(b"\x89PNG")
        chosen = files["artifacts/" + row["image_paths"][row["chosen_index"]]]
        chosen_sha[row["prompt_id"]] = hashlib.sha256(chosen).hexdigest()

    loaded = run_command(
        ["python", "-c", READ_LIKE_DIFFUSERS, repo_id],
        cwd=REPO_ROOT,
        env=hub_env(hub.url, tmp_path / "hf-load"),
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    read = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert sorted(chosen_sha) == sorted(row["prompt_id"] for row in raw)
    batch_ids = read["prompt_ids"]
    assert read["jpg_0_sha"] == [chosen_sha[prompt_id] for prompt_id in batch_ids]
    assert read["labels"] == [1.0] * len(batch_ids)
    assert read["sd15_preferred"] == read["sdxl_preferred"] == ["jpg_0"] * len(batch_ids)
    return raw, read


def test_distilabel_pipeline_run_pushes_the_pair_config_as_diffusers_reads_it(
    hub: HubServer, tmp_path: Path
) -> None:
    """distilabel's own `--repo-id`: the default config has the Pick-a-Pic columns
    (`jpg_0`/`jpg_1` the chosen and rejected candidates' bytes, read by diffusers' DPO
    scripts unchanged), every score, the QA pairs, seeds and sigmas; the leaf step's rows
    (every prompt, paths) are the `export_pairs` config; the candidates are under
    artifacts/, with pipeline.yaml."""
    raw, read = distilabel_run_read_like_diffusers(hub, tmp_path, "org/raw", num_prompts=10)
    assert len(raw) == read["rows"] == 10
    assert read["sd15_shapes"] == read["sdxl_shapes"] == [[6, 32, 32]] * 4
    for column in (
        *("caption", "label_0", "qa_pairs", "image_seeds", "noise_sigmas", "score_margin"),
        *("vqa_scores", "clip_scores", "aesthetic_scores", "weighted_scores"),
    ):
        assert column in read["columns"]
    assert "10 pairs, 0 ties removed" in train_by_repo_id("org/raw", hub, tmp_path)


def test_an_sdxl_run_is_read_by_the_sdxl_script_at_its_original_size(
    hub: HubServer, tmp_path: Path
) -> None:
    """The offline preset rendering with a tiny SDXL (64 px): train_diffusion_dpo_sdxl.py's
    access pattern reads each pair's original size from jpg_0's bytes."""
    raw, read = distilabel_run_read_like_diffusers(
        hub, tmp_path, "org/raw-xl", num_prompts=4, image_model="tiny:stable-diffusion-xl"
    )
    assert len(raw) == read["rows"] == 4
    assert read["sdxl_original_sizes"] == [[64, 64]] * 4
    assert read["sd15_shapes"] == read["sdxl_shapes"] == [[6, 32, 32]] * 4


class TestPublishBadInput:
    def test_a_truncated_shard_is_refused_before_staging(
        self, run_dir: Path, tmp_path: Path
    ) -> None:
        broken = tmp_path / "broken"
        shutil.copytree(run_dir, broken)
        (shard,) = (broken / "data").glob("*.parquet")
        shard.write_bytes(shard.read_bytes()[:2000])
        result = dry_run(broken, tmp_path)
        assert result.returncode == 2
        assert f"{shard.name} is not a readable parquet file" in result.stderr
        assert "ArrowInvalid" not in result.stderr and not (tmp_path / "d").exists()

    def test_a_stray_shard_is_refused(self, run_dir: Path, tmp_path: Path) -> None:
        doubled = tmp_path / "doubled"
        shutil.copytree(run_dir, doubled)
        (shard,) = (doubled / "data").glob("*.parquet")
        shutil.copyfile(shard, doubled / "data" / "train-copy.parquet")
        result = dry_run(doubled, tmp_path)
        assert result.returncode == 2
        assert "holds parquet files its card does not list (data/train-copy.parquet)" in (
            result.stderr
        )

    def test_a_missing_candidate_with_include_artifacts(
        self, run_dir: Path, tmp_path: Path
    ) -> None:
        partial = tmp_path / "partial"
        shutil.copytree(run_dir, partial)
        victim = sorted((partial / "artifacts").rglob("*.png"))[0]
        victim.unlink()
        result = run_command(
            ["agfsync", "publish", str(partial), "--repo-id", "o/n", "--include-artifacts",
             "--dry-run", str(tmp_path / "d")],
            tmp_path,
        )  # fmt: skip
        assert result.returncode == 2
        assert "--include-artifacts: 1 candidate images are missing" in result.stderr
        assert victim.name in result.stderr

    def test_a_hub_that_answers_html(
        self, run_dir: Path, httpserver: HTTPServer, tmp_path: Path
    ) -> None:
        httpserver.expect_request(re.compile(".*")).respond_with_data(
            "<html>proxy login</html>", content_type="text/html"
        )
        result = run_command(
            ["agfsync", "publish", str(run_dir), "--repo-id", "org/pairs", "--retries", "0"],
            tmp_path,
            hub_env(httpserver.url_for("").rstrip("/"), tmp_path / "hf"),
        )
        assert result.returncode == 1
        message = result.stderr.strip().splitlines()[-1]
        assert "answered with something that is not the Hub's API" in message
        assert "Traceback" not in result.stderr

    def test_a_hub_that_never_answers(self, run_dir: Path, tmp_path: Path) -> None:
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections (the backlog), never answers
        try:
            started = time.monotonic()
            result = run_command(
                ["agfsync", "publish", str(run_dir), "--repo-id", "org/pairs", "--retries",
                 "0", "--timeout", "2"],
                tmp_path,
                hub_env(f"http://127.0.0.1:{silent.getsockname()[1]}", tmp_path / "hf"),
            )  # fmt: skip
        finally:
            silent.close()
        assert time.monotonic() - started < 60
        assert result.returncode == 1
        assert "no answer within 2 s" in result.stderr.strip().splitlines()[-1]


class TestSomeoneElsesRepo:
    """A Hub repo agfsync did not make (its card has no `agfsync` tag) keeps its card
    and data unless --overwrite, which replaces only the paths agfsync writes."""

    THEIRS: ClassVar[dict[str, bytes]] = {
        ".gitattributes": b"*.parquet filter=lfs\n",
        "README.md": b"---\ntags:\n- my-own\n---\n# My hand-made dataset\n",
        "data/train-00000-of-00001-0123456789abcdef.parquet": b"their rows",
        "notes.txt": b"mine",
    }

    @staticmethod
    def seed(hub: HubServer, repo_id: str, files: dict[str, bytes]) -> None:
        from tests.hub_server import Commit, Repo

        repo = Repo(repo_id, private=False)
        repo.commits.append(Commit(oid="1" * 40, summary="theirs", files=files, lfs_paths=set()))
        hub.repos[repo_id] = repo

    @staticmethod
    def publish_to(
        repo_id: str, run_dir: Path, hub: HubServer, tmp_path: Path, *args: str
    ) -> subprocess.CompletedProcess[str]:
        return run_command(
            ["agfsync", "publish", str(run_dir), "--repo-id", repo_id, "--retries", "0", *args],
            cwd=tmp_path,
            env=hub_env(hub.url, tmp_path / "hf"),
        )

    def test_refused_without_overwrite(self, run_dir: Path, hub: HubServer, tmp_path: Path) -> None:
        self.seed(hub, "org/theirs", dict(self.THEIRS))
        result = self.publish_to("org/theirs", run_dir, hub, tmp_path)
        assert result.returncode == 2, result.stderr[-3000:]
        assert "has no 'agfsync' tag" in result.stderr and "--overwrite" in result.stderr
        assert hub.files("org/theirs") == self.THEIRS and hub.commit_count("org/theirs") == 1

    def test_overwrite_replaces_only_what_agfsync_writes(
        self, run_dir: Path, hub: HubServer, tmp_path: Path
    ) -> None:
        self.seed(hub, "org/theirs", dict(self.THEIRS))
        result = self.publish_to("org/theirs", run_dir, hub, tmp_path, "--overwrite")
        assert result.returncode == 0, result.stderr[-3000:]
        files = hub.files("org/theirs")
        for kept in ("notes.txt", "data/train-00000-of-00001-0123456789abcdef.parquet"):
            assert files[kept] == self.THEIRS[kept]
        card = yaml.safe_load(files["README.md"].decode().split("---")[1])
        assert "agfsync" in card["tags"]
        listed = {path for entry in card["configs"][0]["data_files"] for path in entry["path"]}
        assert "data/train-00000-of-00001-0123456789abcdef.parquet" not in listed
        # now agfsync's: a plain re-publish is accepted, and still deletes nothing of
        # theirs, though their shard is named as agfsync names its own
        assert self.publish_to("org/theirs", run_dir, hub, tmp_path).returncode == 0
        files = hub.files("org/theirs")
        for kept in ("notes.txt", "data/train-00000-of-00001-0123456789abcdef.parquet"):
            assert files[kept] == self.THEIRS[kept]
