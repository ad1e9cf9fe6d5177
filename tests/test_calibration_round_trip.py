"""The loop closed on real components: push to a real argilla-server, two reviewers
answer, pull, calibrate, and generate again with the fitted weights."""

import json
import uuid
from pathlib import Path

import argilla as rg
import pytest
import yaml

from tests.argilla_server.fixture import ArgillaServer, create_annotator, submit_response
from tests.helpers import generate_offline_run, run_command

pytestmark = pytest.mark.slow  # `make test-fast` skips this module

NUM_PROMPTS = 14
UNRESOLVED = [("both_good", "both_good"), ("toxic", "both_bad"), ("image_a", "image_b")]
"""What the two reviewers answer on the first records: no majority for either image."""


def test_reviews_calibrate_and_the_next_run_uses_the_fitted_weights(
    argilla_server: ArgillaServer, tmp_path: Path
) -> None:
    run_dir = generate_offline_run(tmp_path / "run", NUM_PROMPTS)
    env = {"ARGILLA_API_URL": argilla_server.url, "ARGILLA_API_KEY": argilla_server.api_key}
    client = rg.Argilla(api_url=argilla_server.url, api_key=argilla_server.api_key)
    workspace = f"ws-{uuid.uuid4().hex[:8]}"
    rg.Workspace(name=workspace, client=client).create()

    def agfsync(*args: str) -> str:
        result = run_command(["agfsync", *args], tmp_path, env)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    agfsync("argilla", "push", str(run_dir), "--name", "loop", "--workspace", workspace)
    records = list(client.datasets(name="loop", workspace=workspace).records())
    # Two reviewers who prefer the image CLIP scores higher (its score is in the record's
    # metadata, hidden from real reviewers of a blind review), except on the first
    # records, where they tie, call both bad or toxic, or disagree; the last record is
    # left unanswered.
    reviewers = [f"calibrator-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    keys = [create_annotator(argilla_server, name, workspaces=[workspace]) for name in reviewers]
    for index, record in enumerate(records[:-1]):
        higher = "image_a" if record.metadata["clip_a"] >= record.metadata["clip_b"] else "image_b"
        answers = UNRESOLVED[index] if index < len(UNRESOLVED) else (higher, higher)
        for key, answer in zip(keys, answers, strict=True):
            submit_response(argilla_server, key, record._server_id, {"preference": answer})
    agfsync("argilla", "pull", "loop", "-o", str(tmp_path / "reviewed"), "--workspace", workspace)

    printed = agfsync("calibrate", str(tmp_path / "reviewed"), "-o", str(tmp_path / "cal"))
    resolved = NUM_PROMPTS - len(UNRESOLVED) - 1
    assert f"{resolved} reviewed pairs" in printed
    assert "left out: no verdict: 1, unresolved votes: 3" in printed
    assert "cannot tell these mixes apart" in printed  # 10 pairs: the intervals overlap
    report = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    assert report["ignored"] == {"unresolved votes": 3, "no verdict": 1}
    assert [mix["name"] for mix in report["mixes"]] == [
        "vqa alone",
        "clip alone",
        "aesthetic alone",
        "current weights",
        "fitted weights",
    ]
    preset = yaml.safe_load((tmp_path / "cal" / "weights.yaml").read_text())
    assert set(preset["weights"]) == {"vqa", "clip", "aesthetic"}

    agfsync(
        "generate", "--num-prompts", "2", "--weights", str(tmp_path / "cal" / "weights.yaml"),
        "-o", str(tmp_path / "next"),
    )  # fmt: skip
    run = json.loads((tmp_path / "next" / "run.json").read_text())
    assert {judge["name"]: judge["weight"] for judge in run["judges"]} == pytest.approx(
        preset["weights"]
    )
    assert run["weights"]["fitted"] and run["weights"]["pairs"] == resolved
    assert run["weights"]["source"] == "the local folder reviewed"
    card = (tmp_path / "next" / "README.md").read_text()
    assert f"to {resolved} human-reviewed pairs of the local folder reviewed (weights.yaml)" in card
    agreement = run["weights"]["held_out_agreement"]
    assert f"held-out agreement with people {agreement:.1%}" in card
    # The dataset report says the same, in its provenance table.
    agfsync("report", str(tmp_path / "next"), "-o", str(tmp_path / "next-report"))
    report_page = (tmp_path / "next-report" / "index.html").read_text()
    assert "judge weights" in report_page
    assert f"held-out agreement with people {agreement:.1%}" in report_page
