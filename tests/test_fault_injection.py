"""Faults injected into real runs: each run either completes with the failures
recorded per row or stops with a clear message, and running the same command again
finishes the job, with the dataset an undisturbed run produces.

Model and disk faults are injected into the offline preset by `tests/fault_driver.py`;
the LLM provider's outage is a loopback OpenAI-compatible server answering 503.
"""

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from pytest_httpserver import HTTPServer

from agfsync.pipelines import build_preset
from agfsync.testing.openai_server import HTTPError, ScriptedChatCompletions
from tests.helpers import REPO_ROOT, assert_same_dataset, run_command
from tests.test_text_preset import yes_questions

pytestmark = pytest.mark.slow  # `make test-fast` skips this module

NUM_PROMPTS = 16
"""Two batches of 8 prompts, 4 candidates each."""


def generate_args(output: Path) -> list[str]:
    return ["generate", "-o", str(output), "--num-prompts", str(NUM_PROMPTS)]


def cache_env(output: Path) -> dict[str, str]:
    """A distilabel cache per scenario, shared by its faulty run and its re-run."""
    return {"DISTILABEL_CACHE_DIR": str(output.parent / f"{output.name}-cache")}


def run_with_fault(fault: str, output: Path) -> subprocess.CompletedProcess[str]:
    command = ["python", "-m", "tests.fault_driver", fault, *generate_args(output)]
    return run_command(command, cwd=REPO_ROOT, env=cache_env(output))


def run_again(output: Path) -> subprocess.CompletedProcess[str]:
    """The same command, without the fault."""
    result = run_command(
        ["agfsync", *generate_args(output)], cwd=output.parent, env=cache_env(output)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "prompts did not finish" not in result.stderr
    return result


def unpaired(output: Path) -> list[dict[str, str]]:
    return json.loads((output / "run.json").read_text())["unpaired"]


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("undisturbed") / "run"
    result = run_command(
        ["agfsync", *generate_args(output)], cwd=output.parent, env=cache_env(output)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return output


class TestFaultsDuringARun:
    def test_a_judge_failing_on_one_batch_is_recorded_and_judged_again(
        self, undisturbed: Path, tmp_path: Path
    ) -> None:
        output = tmp_path / "run"
        faulty = run_with_fault("judge-fails-on-its-second-batch", output)
        assert faulty.returncode == 0, faulty.stderr[-3000:]
        assert "8 prompts did not finish" in faulty.stderr
        assert "judge clip failed: RuntimeError: simulated judge failure" in faulty.stderr
        assert pq.read_table(output / "data").num_rows == NUM_PROMPTS - 8
        assert [item["reason"] for item in unpaired(output)] == [
            "only 0 of 4 candidates have a score; a pair needs 2"
        ] * 8

        run_again(output)
        assert_same_dataset(output, undisturbed)

    def test_an_image_corrupted_before_judging_is_rendered_and_judged_again(
        self, undisturbed: Path, tmp_path: Path
    ) -> None:
        output = tmp_path / "run"
        faulty = run_with_fault("image-corrupted-before-judging", output)
        assert faulty.returncode == 0, faulty.stderr[-3000:]
        assert "1 prompts did not finish" in faulty.stderr
        assert "unreadable image: generate_images/images/" in faulty.stderr
        rows = pq.read_table(output / "data").to_pylist()
        damaged = [row for row in rows if any(row["judging_errors"])]
        assert len(damaged) == 1 and damaged[0]["judging_errors"][1].startswith("unreadable")
        assert damaged[0]["vqa_scores"][1] != damaged[0]["vqa_scores"][1]  # NaN

        run_again(output)
        assert_same_dataset(output, undisturbed)

    def test_out_of_memory_halves_the_batches_and_loses_nothing(self, tmp_path: Path) -> None:
        output = tmp_path / "run"
        result = run_with_fault("out-of-memory-above-small-batches", output)
        assert result.returncode == 0, result.stderr[-3000:]
        log = (output / "pipeline.log").read_text()
        assert "Out of memory; retrying with batches of 4 images." in log
        assert "vqa judge out of memory; retrying with batches of 8." in log
        assert "prompts did not finish" not in result.stderr
        rows = pq.read_table(output / "data").to_pylist()
        assert len(rows) == NUM_PROMPTS
        assert not any(error for row in rows for error in row["judging_errors"])

    def test_out_of_memory_at_any_batch_size_fails_those_prompts_until_a_rerun(
        self, undisturbed: Path, tmp_path: Path
    ) -> None:
        output = tmp_path / "run"
        faulty = run_with_fault("generation-out-of-memory-on-its-second-batch", output)
        assert faulty.returncode == 0, faulty.stderr[-3000:]
        assert "8 prompts did not finish" in faulty.stderr
        assert "generate_images: rendering failed: OutOfMemoryError" in faulty.stderr
        assert len(unpaired(output)) == 8

        run_again(output)
        assert_same_dataset(output, undisturbed)

    def test_an_image_deleted_after_the_run_is_rendered_by_the_next_one(
        self, undisturbed: Path, tmp_path: Path
    ) -> None:
        output = tmp_path / "run"
        run_again(output)
        row = pq.read_table(output / "data").to_pylist()[3]
        chosen = row["image_paths"][row["chosen_index"]]
        cache = Path(cache_env(output)["DISTILABEL_CACHE_DIR"])
        (cached,) = cache.glob(f"*/*/executions/*/data/steps_artifacts/{chosen}")
        cached.unlink()

        stopped = run_command(
            ["agfsync", *generate_args(output)], cwd=output.parent, env=cache_env(output)
        )
        assert stopped.returncode == 2
        message = stopped.stderr.strip().splitlines()[-1]
        assert f"of prompt {row['prompt_id']!r} is missing" in message
        assert "run the same command again to render it" in message
        run_again(output)
        assert cached.is_file()
        assert_same_dataset(output, undisturbed)

    def test_a_full_disk_while_writing_the_dataset_stops_cleanly(
        self, undisturbed: Path, tmp_path: Path
    ) -> None:
        output = tmp_path / "run"
        faulty = run_with_fault("disk-full-when-writing-parquet", output)
        assert faulty.returncode == 2
        message = faulty.stderr.strip().splitlines()[-1]
        assert "Could not write the dataset to" in message
        assert "No space left on device" in message and "run the same command again" in message
        assert not output.exists() and not list(output.parent.glob(f".{output.name}.*"))

        run_again(output)
        assert_same_dataset(output, undisturbed)


OUTAGE_CATEGORIES = {
    "Animals": ["a heron fishing in a misty marsh", "two otters juggling pebbles"],
    "Plants": ["a cactus garden under violet dusk", "moss carpeting ancient granite"],
    "Transportation": ["a vintage tram climbing cobbled hills", "kayaks drifting past glaciers"],
    "Food and Beverages": ["steaming dumplings in bamboo baskets", "lemonade jugs on a porch"],
    "Sports and Fitness": ["a sprinter leaving starting blocks", "climbers roped on sandstone"],
}
"""Five categories of two prompts: the QA step gets a batch of 8 prompts, then one of 2."""


def answer_healthily(body: dict[str, Any]) -> str:
    """What a working provider answers: each category's prompts, or one question per
    long word of the prompt (every element appears in the prompt, so all are valid)."""
    system, user = body["messages"][0]["content"], body["messages"][1]["content"]
    if "text-to-image model" in system:
        category = re.search(r"Category: (.+?) \(", user).group(1)  # type: ignore[union-attr]
        return json.dumps(OUTAGE_CATEGORIES[category])
    prompt = user.removeprefix("Description: ")
    return json.dumps(
        yes_questions([word for word in re.findall(r"[a-z]+", prompt) if len(word) > 4])
    )


class TestLLMProviderOutage:
    def test_prompts_whose_requests_failed_are_asked_again_by_the_next_run(
        self, httpserver: HTTPServer, tmp_path: Path
    ) -> None:
        decompose = build_preset("text-openai").dag.get_step("decompose_prompts")["step"]
        # Every request of a prompt of the first QA batch fails: the client's own tries,
        # times the step's attempts; then the provider is back for the second batch.
        tries_per_prompt = (decompose.llm.max_retries + 1) * (1 + decompose.max_format_retries)
        outage = [HTTPError(503, {"retry-after-ms": "1"})] * (8 * tries_per_prompt)
        writing = [answer_healthily] * len(OUTAGE_CATEGORIES)
        provider = ScriptedChatCompletions([*writing, *outage, answer_healthily])
        (tmp_path / "categories.yaml").write_text(
            yaml.safe_dump(
                [
                    {"name": name, "description": name.lower(), "examples": [f"a {name} photo"]}
                    for name in OUTAGE_CATEGORIES
                ]
            )
        )
        env = {
            "OPENAI_BASE_URL": provider.install(httpserver),
            "OPENAI_API_KEY": "sk-loopback",
            "DISTILABEL_CACHE_DIR": str(tmp_path / "cache"),
        }
        command = [
            *("agfsync", "generate", "--preset", "text-openai", "-o", "out"),
            *("--categories", "categories.yaml", "--prompts-per-category", "2"),
            *("--dedup", "minhash"),
        ]

        first = run_command(command, cwd=tmp_path, env=env)
        assert first.returncode == 0, first.stderr[-3000:]
        assert "8 prompts did not finish" in first.stderr
        assert "decompose_prompts: no usable output after 3 failures" in first.stderr
        rows = {row["prompt"]: row for row in pq.read_table(tmp_path / "out" / "data").to_pylist()}
        assert len(rows) == 10
        failed = {prompt for prompt, row in rows.items() if row["qa_error"]}
        assert len(failed) == 8
        assert all(
            "503" in rows[prompt]["qa_error"] and not rows[prompt]["qa_pairs"] for prompt in failed
        )

        provider.script[:] = [answer_healthily]
        provider.requests.clear()
        second = run_command(command, cwd=tmp_path, env=env)
        assert second.returncode == 0, second.stderr[-3000:]
        assert "prompts did not finish" not in second.stderr
        # Only the failed prompts were asked again, once each; no prompt was rewritten.
        asked = [
            request["body"]["messages"][1]["content"].removeprefix("Description: ")
            for request in provider.requests
        ]
        assert sorted(asked) == sorted(failed)
        resumed = {
            row["prompt"]: row for row in pq.read_table(tmp_path / "out" / "data").to_pylist()
        }
        assert resumed.keys() == rows.keys()
        assert all(row["qa_error"] is None and row["qa_pairs"] for row in resumed.values())
        for prompt in rows.keys() - failed:
            assert resumed[prompt] == rows[prompt]
