"""`agfsync argilla push` / `pull` against a real Argilla 2.8 server (in-memory search
engine, see tests/argilla_server/), with two annotators answering through the REST
endpoint the web UI uses, and the merge and agreement checked by hand."""

import base64
import io
import re
import shutil
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import argilla as rg
import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from agfsync.dataset.folder import listed_shards
from agfsync.environment import AGFSYNC_ARGILLA_REQUEST_BYTES
from agfsync.errors import ConfigurationError
from agfsync.review.argilla import (
    FIELD_CHARACTERS,
    REQUEST_BYTES,
    REVIEW_IMAGE_SIZE,
    recorded_source,
    request_batches,
    request_budget,
    review_image,
)
from agfsync.review.verdicts import shows_rejected_first
from tests.argilla_server.byte_counter import byte_counting_proxy
from tests.argilla_server.fixture import ArgillaServer, create_annotator, submit_response
from tests.diffusers_dpo import read_like_diffusers
from tests.helpers import closed_port, generate_offline_run, run_command
from tests.hub_server import HubServer
from tests.test_publish import hub_env

pytestmark = pytest.mark.slow  # `make test-fast` skips this module

NUM_PROMPTS = 6
AGREEMENT_LINE = re.compile(
    r"^\s*(overall|category|score margin)\s+(.*?)\s+(\d+)\s+(\S+)\s+(\S+)$", re.MULTILINE
)
SEED = 0


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_offline_run(tmp_path_factory.mktemp("review") / "run", NUM_PROMPTS)


@pytest.fixture
def workspace(argilla_server: ArgillaServer) -> str:
    client = rg.Argilla(api_url=argilla_server.url, api_key=argilla_server.api_key)
    name = f"ws-{uuid.uuid4().hex[:8]}"
    rg.Workspace(name=name, client=client).create()
    return name


def argilla_env(server: ArgillaServer) -> dict[str, str]:
    return {"ARGILLA_API_URL": server.url, "ARGILLA_API_KEY": server.api_key}


def agfsync(server: ArgillaServer, tmp_path: Path, *args: str) -> Any:
    return run_command(["agfsync", "argilla", *args], tmp_path, argilla_env(server))


def rows_of(folder: Path) -> list[dict[str, Any]]:
    files = [str(path) for path in listed_shards(folder)]
    return list(datasets.load_dataset("parquet", data_files=files, split="train"))


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32)


def copy_of(shown: Image.Image, original: bytes, other: bytes) -> bool:
    """The review copy is a lossy WebP of `original`: same size, and nearer to it than to
    the other image of the pair."""
    seen = np.asarray(shown.convert("RGB"), dtype=np.float32)
    expected, unexpected = pixels(original), pixels(other)
    if seen.shape != expected.shape:
        return False
    return float(np.abs(seen - expected).mean()) < float(np.abs(seen - unexpected).mean())


def records_of(server: ArgillaServer, name: str, workspace: str) -> dict[str, Any]:
    client = rg.Argilla(api_url=server.url, api_key=server.api_key)
    dataset = client.datasets(name=name, workspace=workspace)
    return {record.id: record for record in dataset.records(with_suggestions=True)}


def answer(agrees: bool | str | None, prompt_id: str) -> str:
    """The label a reviewer clicks to agree (True) or disagree (False) with the AI,
    given where the AI's chosen image is shown; strings are passed through."""
    if isinstance(agrees, str):
        return agrees
    assert agrees is not None
    ai = "image_b" if shows_rejected_first(prompt_id, SEED) else "image_a"
    other = "image_a" if ai == "image_b" else "image_b"
    return ai if agrees else other


def test_push_review_and_pull_round_trip(
    argilla_server: ArgillaServer, workspace: str, run_dir: Path, tmp_path: Path
) -> None:
    source = rows_of(run_dir)
    ids = [row["prompt_id"] for row in source]
    push = ["push", str(run_dir), "--name", "pairs", "--workspace", workspace]
    first = agfsync(argilla_server, tmp_path, *push)
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"Pushed {NUM_PROMPTS} pairs" in first.stdout and "(created)" in first.stdout
    again = agfsync(argilla_server, tmp_path, *push)
    assert again.returncode == 0 and "(updated)" in again.stdout
    other = shutil.copytree(run_dir, tmp_path / "other-run")
    mixed = agfsync(argilla_server, tmp_path, "push", str(other), *push[2:])
    assert mixed.returncode == 2
    assert f"holds pairs pushed from {run_dir.resolve()}" in mixed.stderr

    records = records_of(argilla_server, "pairs", workspace)
    assert sorted(records) == sorted(ids)  # stable ids: the re-push updated, not duplicated
    orders = {prompt_id: shows_rejected_first(prompt_id, SEED) for prompt_id in ids}
    assert len(set(orders.values())) == 2, "the fixed seed should show both orders"
    for row in source:
        record = records[row["prompt_id"]]
        rejected_first = orders[row["prompt_id"]]
        shown_first, shown_second = ("jpg_1", "jpg_0") if rejected_first else ("jpg_0", "jpg_1")
        assert copy_of(record.fields["image_a"], row[shown_first], row[shown_second])
        assert copy_of(record.fields["image_b"], row[shown_second], row[shown_first])
        assert record.metadata["image_a_is"] == ("rejected" if rejected_first else "chosen")
        assert record.metadata["ai_choice_shown"] == "no"
        assert record.metadata["category"] == row["category"]
        assert record.metadata["score_margin"] == pytest.approx(row["score_margin"])
        a_index = row["rejected_index"] if rejected_first else row["chosen_index"]
        assert record.metadata["clip_a"] == pytest.approx(row["clip_scores"][a_index])
        # Blind: no suggestion and no scores for the reviewers to lean on.
        assert len(record.suggestions) == 0
        assert "Hidden" in record.fields["scores"]
        assert record.fields["prompt"] == row["caption"]
        assert row["qa_pairs"][0]["question"] in record.fields["qa_pairs"]

    # Two reviewers. Per prompt: (reviewer 1, reviewer 2); True = agrees with the AI.
    script: dict[str, tuple[bool | str | None, bool | str | None]] = {
        ids[0]: (True, True),  # resolved, agrees
        ids[1]: (True, False),  # tie: unresolved
        ids[2]: (False, False),  # resolved, disagrees
        ids[3]: ("both_good", True),  # 2 votes vs 1: resolved, agrees
        ids[4]: ("both_bad", "toxic"),  # answered, votes for neither image
        ids[5]: (None, None),  # not answered
    }
    for reviewer in (0, 1):
        key = create_annotator(argilla_server, f"reviewer-{reviewer}", workspaces=[workspace])
        for prompt_id, answers in script.items():
            if answers[reviewer] is not None:
                submit_response(
                    argilla_server,
                    key,
                    records[prompt_id]._server_id,
                    {"preference": answer(answers[reviewer], prompt_id)},
                )

    # No --source: the push recorded the folder in the dataset's guidelines.
    out = tmp_path / "reviewed"
    pulled = agfsync(
        argilla_server, tmp_path, "pull", "pairs", "--output", str(out), "--workspace", workspace
    )
    assert pulled.returncode == 0, pulled.stderr[-3000:]
    assert f"({NUM_PROMPTS} pairs in Argilla, 5 answered, 3 resolved" in pulled.stdout

    reviewed = {row["prompt_id"]: row for row in rows_of(out)}
    original = {row["prompt_id"]: row for row in source}
    expected = {ids[0]: ("human", 1.0), ids[2]: ("human", 0.0), ids[3]: ("human", 1.0)}
    for prompt_id in ids:
        source_label, label = expected.get(prompt_id, ("ai", 1.0))
        row = reviewed[prompt_id]
        assert (row["label_source"], row["label_0"]) == (source_label, label), prompt_id
        # jpg_0 stays the AI's choice; label_0 = 0 says the reviewers preferred jpg_1.
        assert row["jpg_0"] == original[prompt_id]["jpg_0"]
        assert row["jpg_1"] == original[prompt_id]["jpg_1"]
    assert reviewed[ids[3]]["human_votes"]["both_good"] == 1
    # diffusers' DPO scripts on the reviewed folder: `label_0 == 0` swaps the pair, so
    # they train on jpg_1 as the winner where the reviewers preferred it.
    read = read_like_diffusers(str(out), rows=NUM_PROMPTS)
    assert read["labels"] == [reviewed[prompt_id]["label_0"] for prompt_id in ids]
    winners = ["jpg_1" if label == 0 else "jpg_0" for label in read["labels"]]
    assert "jpg_1" in winners and read["sd15_preferred"] == read["sdxl_preferred"] == winners
    assert reviewed[ids[4]]["human_votes"]["toxic"] == 1
    assert "## Human review" in (out / "README.md").read_text()

    # Agreement, by hand: resolved pairs ids[0] (agree), ids[2] (disagree), ids[3] (agree).
    resolved = [(ids[0], True), (ids[2], False), (ids[3], True)]
    table = {
        (match[1], match[2]): (int(match[3]), float(match[4]), match[5])
        for match in AGREEMENT_LINE.finditer(pulled.stdout)
    }

    def expected_line(pairs: list[tuple[str, bool]]) -> tuple[int, Any, Any]:
        """(count, raw agreement, Cohen's kappa over the shown side), computed here."""
        ai = ["b" if orders[prompt_id] else "a" for prompt_id, _ in pairs]
        human = [
            side if agrees else ("a" if side == "b" else "b")
            for side, (_, agrees) in zip(ai, pairs, strict=True)
        ]
        n = len(pairs)
        p_o = sum(agrees for _, agrees in pairs) / n
        p_e = sum((ai.count(side) / n) * (human.count(side) / n) for side in ("a", "b"))
        kappa = "nan" if p_e == 1 else pytest.approx((p_o - p_e) / (1 - p_e), abs=1e-3)
        return n, pytest.approx(p_o, abs=1e-3), kappa

    def reported(count: int, raw: float, kappa: str) -> tuple[int, float, Any]:
        return count, raw, "nan" if kappa == "nan" else float(kappa)

    assert reported(*table[("overall", "all")]) == expected_line(resolved)
    by_category: dict[str, list[tuple[str, bool]]] = defaultdict(list)
    for prompt_id, agrees in resolved:
        by_category[original[prompt_id]["category"]].append((prompt_id, agrees))
    assert {
        key: reported(*line) for (group, key), line in table.items() if group == "category"
    } == {name: expected_line(pairs) for name, pairs in by_category.items()}
    # Three resolved pairs in margin terciles: one pair per bucket, listed in margin order.
    by_margin = sorted(resolved, key=lambda pair: original[pair[0]]["score_margin"])
    buckets = [line for (group, _), line in table.items() if group == "score margin"]
    assert [reported(*line) for line in buckets] == [expected_line([pair]) for pair in by_margin]


def test_a_published_dataset_is_pushed_by_its_hub_id(
    argilla_server: ArgillaServer, workspace: str, run_dir: Path, tmp_path: Path
) -> None:
    """The README's `agfsync argilla push my-org/ds`: a dataset published to the
    (loopback) Hub is downloaded and pushed, and the push records the repo id."""
    hub = HubServer().start()
    try:
        env = hub_env(hub.url, tmp_path / "hf")
        published = run_command(
            ["agfsync", "publish", str(run_dir), "--repo-id", "org/pairs", "--retries", "0"],
            tmp_path,
            env,
        )
        assert published.returncode == 0, published.stderr[-3000:]
        pushed = run_command(
            ["agfsync", "argilla", "push", "org/pairs", "--name", "hub", "--workspace", workspace],
            tmp_path,
            env | argilla_env(argilla_server),
        )
    finally:
        hub.stop()
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    records = records_of(argilla_server, "hub", workspace)
    assert sorted(records) == sorted(row["prompt_id"] for row in rows_of(run_dir))
    client = rg.Argilla(api_url=argilla_server.url, api_key=argilla_server.api_key)
    dataset = client.datasets(name="hub", workspace=workspace)
    assert recorded_source(dataset.settings.guidelines) == "org/pairs"


def test_sampled_push_is_stratified_by_category(
    argilla_server: ArgillaServer, workspace: str, run_dir: Path, tmp_path: Path
) -> None:
    result = agfsync(
        argilla_server,
        tmp_path,
        "push",
        str(run_dir),
        "--name",
        "sample",
        "--workspace",
        workspace,
        "--sample",
        "3",
        "--by",
        "category",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = records_of(argilla_server, "sample", workspace)
    assert len(records) == 3
    assert len({record.metadata["category"] for record in records.values()}) == 3


def test_a_dataset_with_other_settings_is_refused_with_the_difference(
    argilla_server: ArgillaServer, workspace: str, run_dir: Path, tmp_path: Path
) -> None:
    client = rg.Argilla(api_url=argilla_server.url, api_key=argilla_server.api_key)
    rg.Dataset(
        name="foreign",
        workspace=workspace,
        settings=rg.Settings(
            fields=[rg.TextField(name="prompt")],
            questions=[rg.LabelQuestion(name="preference", labels=["left", "right"])],
        ),
        client=client,
    ).create()
    result = agfsync(
        argilla_server,
        tmp_path,
        "push",
        str(run_dir),
        "--name",
        "foreign",
        "--workspace",
        workspace,
    )
    assert result.returncode == 2
    assert "exists with settings that differ from agfsync's" in result.stderr
    assert "unexpected `LabelQuestion preference ['left', 'right']`" in result.stderr
    assert "fields: expected `ImageField image_a`" in result.stderr


def test_unreachable_server_gives_a_clear_message(run_dir: Path, tmp_path: Path) -> None:
    port = closed_port()
    result = run_command(
        ["agfsync", "argilla", "push", str(run_dir), "--name", "x", "--retries", "1"],
        tmp_path,
        {"ARGILLA_API_URL": f"http://127.0.0.1:{port}", "ARGILLA_API_KEY": "secret-key-123"},
    )
    assert result.returncode == 2
    assert "Argilla push failed (ConnectError" in result.stderr
    assert "Traceback" not in result.stderr
    assert "secret-key-123" not in result.stderr + result.stdout


def test_shown_ai_choice_is_opt_in_and_left_out_of_the_agreement(
    argilla_server: ArgillaServer, workspace: str, run_dir: Path, tmp_path: Path
) -> None:
    push = ["push", str(run_dir), "--name", "hinted", "--workspace", workspace]
    pushed = agfsync(argilla_server, tmp_path, *push, "--show-ai-choice")
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    records = records_of(argilla_server, "hinted", workspace)
    ids = sorted(records)
    for prompt_id, record in records.items():
        assert record.metadata["ai_choice_shown"] == "yes"
        ai = "image_b" if shows_rejected_first(prompt_id, SEED) else "image_a"
        assert record.suggestions["preference"].value == ai
        assert "| clip |" in record.fields["scores"]
    key = create_annotator(argilla_server, "hinted-reviewer", workspaces=[workspace])
    for prompt_id in ids[:2]:
        submit_response(
            argilla_server,
            key,
            records[prompt_id]._server_id,
            {"preference": answer(True, prompt_id)},
        )
    out = tmp_path / "reviewed"
    pulled = agfsync(
        argilla_server, tmp_path, "pull", "hinted", "--output", str(out), "--workspace", workspace
    )
    assert pulled.returncode == 0, pulled.stderr[-3000:]
    assert "2 records were reviewed with the AI's choice shown" in pulled.stdout + pulled.stderr
    overall = [m for m in AGREEMENT_LINE.finditer(pulled.stdout) if m[1] == "overall"]
    assert [int(match[3]) for match in overall] == [0]  # verdicts applied, not counted
    labels = {row["prompt_id"]: row["label_source"] for row in rows_of(out)}
    assert [labels[prompt_id] for prompt_id in ids[:2]] == ["human", "human"]


def photo_like(seed: int, size: int = 1024) -> bytes:
    """A 1024 px PNG that compresses like a photograph (smooth shapes plus sensor noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(6 * x + seed), np.cos(5 * y - seed), np.sin(4 * (x + y))], axis=-1)
    noisy = (base + 1) * 110 + rng.normal(0, 12, (size, size, 3))
    buffer = io.BytesIO()
    Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_full_size_images_are_sent_small_and_in_bounded_requests(
    argilla_server: ArgillaServer, workspace: str, run_dir: Path, tmp_path: Path
) -> None:
    big = Path(shutil.copytree(run_dir, tmp_path / "big-run"))
    for shard in listed_shards(big):
        table = pq.read_table(shard)
        for column in ("jpg_0", "jpg_1"):
            images = [photo_like(row * 2 + (column == "jpg_1")) for row in range(table.num_rows)]
            index = table.schema.get_field_index(column)
            table = table.set_column(
                index, table.schema.field(index), pa.array(images, pa.binary())
            )
        pq.write_table(table, shard)
    original_field = len(base64.b64encode(photo_like(0))) + len("data:image/png;base64,")
    # A budget of about two records (four review images) per request: the 6 records
    # need 3 requests or more, each under the budget as measured on the wire.
    budget = 5 * len(review_image(photo_like(0)))
    with byte_counting_proxy(argilla_server.url) as (url, measured):
        result = run_command(
            ["agfsync", "argilla", "push", str(big), "--name", "big", "--workspace", workspace],
            tmp_path,
            {
                "ARGILLA_API_URL": url,
                "ARGILLA_API_KEY": argilla_server.api_key,
                AGFSYNC_ARGILLA_REQUEST_BYTES.name: str(budget),
            },
        )
    assert result.returncode == 0, result.stderr[-3000:]
    assert measured.longest_field < FIELD_CHARACTERS and measured.longest_field < original_field / 3
    assert measured.largest_request < REQUEST_BYTES
    assert len(measured.record_requests) >= NUM_PROMPTS // 2, measured.record_requests
    assert max(measured.record_requests) < budget, (budget, measured.record_requests)
    records = records_of(argilla_server, "big", workspace)
    assert len(records) == NUM_PROMPTS
    record = next(iter(records.values()))
    assert max(record.fields["image_a"].size) == REVIEW_IMAGE_SIZE


def test_request_batches_keep_the_order_and_the_byte_budget() -> None:
    """Records of known sizes: grouped in order under the budget; one larger than the
    budget goes alone, as documented."""
    budget = 20_000
    sizes = [3_000, 3_000, 3_000, 9_000, 25_000, 500, 500]
    records = [
        rg.Record(id=f"r{index}", fields={"prompt": "x" * size}) for index, size in enumerate(sizes)
    ]
    batches = list(request_batches(iter(records), budget))
    assert [[record.id for record in batch] for batch in batches] == [
        ["r0", "r1", "r2"],
        ["r3"],
        ["r4"],
        ["r5", "r6"],
    ]
    for batch in batches:
        data = sum(len(record.fields["prompt"]) for record in batch)
        assert data < budget or len(batch) == 1
    assert sum(batch == [records[4]] for batch in batches) == 1  # over the budget, alone
    assert list(request_batches(iter([]), budget)) == []


def test_the_request_budget_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    name = AGFSYNC_ARGILLA_REQUEST_BYTES.name
    monkeypatch.delenv(name, raising=False)
    assert request_budget() == REQUEST_BYTES
    monkeypatch.setenv(name, "123456")
    assert request_budget() == 123456
    monkeypatch.setenv(name, "16MiB")
    with pytest.raises(ConfigurationError, match=name):
        request_budget()
