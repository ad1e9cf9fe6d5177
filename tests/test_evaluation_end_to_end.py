"""`agfsync evaluate` and `agfsync report` as a user runs them, and their HTML reports in
headless Chromium.

The evaluation compares the tiny SD model with itself plus a random LoRA on TIFA (TIFA's
own sample question file), HPSv2 (2 prompts per style) and the VLM judge (a loopback
OpenAI-compatible server whose judge always answers "first"), in a subprocess. The
browser tests read the rendered DOM: the report's inline hook marks broken images and
script errors on `<html>`, and Chromium's log carries any console message.
"""

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import datasets
import pytest
from PIL import Image
from pytest_httpserver import HTTPServer

import agfsync
from agfsync.dataset.folder import build_preference_dataset, write_dataset_folder
from agfsync.dataset.run_info import RunInfo
from agfsync.errors import ConfigurationError
from agfsync.evaluation.run import parse_scorer
from agfsync.evaluation.suites import HPSV2_STYLES, TIFA_SAMPLE_QUESTION_ANSWERS
from agfsync.evaluation.vlm_judge import JUDGE_QUESTIONS
from agfsync.testing.openai_server import ScriptedChatCompletions
from tests.helpers import REPO_ROOT, assert_no_library_noise, card_listing, run_command
from tests.test_evaluation_generate import make_tiny_lora

pytestmark = pytest.mark.slow  # `make test-fast` skips this module

API_KEY = "sk-evaluate-secret-7731"
OFFLINE_PROMPTS = Path(agfsync.__file__).parent / "data" / "offline_prompts.jsonl"
TIFA_TYPES = {"animal/human", "object", "location", "activity", "color", "counting"}


@dataclass
class Evaluation:
    out: Path
    image_cache: Path
    lora: str
    stdout: str
    stderr: str
    judge: ScriptedChatCompletions
    judge_url: str

    @property
    def metrics(self) -> dict:
        return json.loads((self.out / "metrics.json").read_text())


def evaluate(out: Path, image_cache: Path, lora: str, judge_url: str, suites: str):
    heldout = out.parent / "heldout.jsonl"
    heldout.write_text("".join(OFFLINE_PROMPTS.read_text().splitlines(keepends=True)[:2]))
    return run_command(
        [
            "agfsync",
            "evaluate",
            "--base",
            "tiny:stable-diffusion",
            "--tuned",
            lora,
            "--suite",
            suites,
            "--tifa-qa",
            str(TIFA_SAMPLE_QUESTION_ANSWERS),
            "--heldout",
            str(heldout),
            "--prompts-per-suite",
            "8",
            "--steps",
            "2",
            "--vqa-model",
            "tiny:blip2",
            "--clip-model",
            "tiny:clip",
            "--aesthetic-model",
            "tiny:clip-vit-large",
            "--vlm-base-url",
            judge_url,
            "--vlm-model",
            "judge-model",
            "--image-cache",
            str(image_cache),
            "-o",
            str(out),
        ],
        cwd=out.parent,
        env={"OPENAI_API_KEY": API_KEY},
    )


@pytest.fixture(scope="module")
def judge_server() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def evaluation(
    tiny_sd_path: str, judge_server: HTTPServer, tmp_path_factory: pytest.TempPathFactory
) -> Evaluation:
    root = tmp_path_factory.mktemp("evaluate")
    lora = str(make_tiny_lora(tiny_sd_path, root / "lora"))
    judge = ScriptedChatCompletions(["first"])
    url = judge.install(judge_server)
    result = evaluate(root / "out", root / "images", lora, url, "tifa,dsg,hpsv2,vlm,heldout")
    assert result.returncode == 0, result.stderr[-4000:]
    return Evaluation(root / "out", root / "images", lora, result.stdout, result.stderr, judge, url)


class TestEvaluate:
    def test_metrics_cover_every_suite_with_counts(self, evaluation: Evaluation) -> None:
        metrics = evaluation.metrics
        assert metrics["suites"] == {
            "tifa": {"prompts": 2, "images": 4, "questions": 19},
            "dsg": {"prompts": 8, "images": 16, "questions": metrics["suites"]["dsg"]["questions"]},
            "hpsv2": {"prompts": 8, "images": 16, "questions": 0},
            "vlm": {"prompts": 8, "images": 16, "questions": 0},
            "heldout": {"prompts": 2, "images": 4, "questions": 19},
        }
        assert metrics["suites"]["dsg"]["questions"] > 8
        assert metrics["models"]["tuned"] == {
            "model": "tiny:stable-diffusion",
            "lora": evaluation.lora,
            "label": f"tiny:stable-diffusion + LoRA {evaluation.lora}",
        }
        found = {(c["suite"], c["metric"], c["group"]): c for c in metrics["comparisons"]}
        assert {group for suite, _, group in found if suite == "tifa"} == {"all"} | TIFA_TYPES
        assert found[("tifa", "tifa", "all")]["units"] == 2
        assert 0 <= found[("tifa", "tifa", "all")]["base_mean"] <= 100
        for metric in ("clip", "aesthetic"):
            assert found[("hpsv2", metric, "all")]["units"] == 8
            for style in HPSV2_STYLES:
                assert found[("hpsv2", metric, style)]["units"] == 2
            interval = found[("hpsv2", metric, "all")]["win_rate"]["interval"]
            assert 0 <= interval["low"] <= interval["high"] <= 1
        assert {group for suite, _, group in found if suite == "dsg"} <= {
            "all",
            "entity",
            "attribute",
            "relation",
            "global",
            "other",
        }
        assert found[("dsg", "dsg", "all")]["units"] == 8
        for metric in ("vqa", "clip", "aesthetic"):
            assert found[("heldout", metric, "all")]["units"] == 2
            assert found[("heldout", metric, "Natural Landscapes")]["units"] == 2

    def test_a_judge_that_always_answers_first_ties_every_pair(
        self, evaluation: Evaluation
    ) -> None:
        comparisons = evaluation.metrics["comparisons"]
        found = {(c["suite"], c["metric"], c["group"]): c for c in comparisons}
        for question in JUDGE_QUESTIONS:
            rate = found[("vlm", question, "all")]["win_rate"]
            assert (rate["wins"], rate["ties"], rate["losses"], rate["rate"]) == (0, 8, 0, 0.5)
        assert len(evaluation.judge.requests) == 8 * len(JUDGE_QUESTIONS) * 2

    def test_nothing_printed_that_a_user_cannot_act_on(self, evaluation: Evaluation) -> None:
        assert_no_library_noise(evaluation.stderr)

    def test_the_lora_changed_the_images(self, evaluation: Evaluation) -> None:
        clip = {}
        for line in (evaluation.out / "observations.jsonl").read_text().splitlines():
            item = json.loads(line)
            if (item["suite"], item["metric"], item["group"]) == ("hpsv2", "clip", "all"):
                clip[(item["unit"], item["model"])] = item["value"]
        assert len(clip) == 16
        assert any(clip[(unit, "base")] != clip[(unit, "tuned")] for unit, _ in clip)

    def test_the_api_key_is_sent_but_never_written_or_printed(self, evaluation: Evaluation) -> None:
        assert evaluation.judge.requests[0]["headers"]["Authorization"] == f"Bearer {API_KEY}"
        assert API_KEY not in evaluation.stdout + evaluation.stderr
        for path in evaluation.out.rglob("*"):
            if path.suffix in {".json", ".jsonl", ".html"}:
                assert API_KEY not in path.read_text(), path

    def test_another_suite_reuses_the_cached_images(
        self, evaluation: Evaluation, tmp_path: Path
    ) -> None:
        images = sorted(evaluation.image_cache.rglob("*.png"))
        assert len(images) == 2 * (2 + 8 + 8 + 2)  # tifa, dsg, hpsv2, heldout; both models
        stamps = [path.stat().st_mtime_ns for path in images]
        out = tmp_path / "vlm-only"
        result = evaluate(out, evaluation.image_cache, evaluation.lora, evaluation.judge_url, "vlm")
        assert result.returncode == 0, result.stderr[-4000:]
        assert sorted(evaluation.image_cache.rglob("*.png")) == images
        assert [path.stat().st_mtime_ns for path in images] == stamps
        assert "Loading pipeline components" not in result.stderr
        assert list(json.loads((out / "metrics.json").read_text())["suites"]) == ["vlm"]

    def test_extra_judges_are_read_and_checked_before_any_work(self) -> None:
        spec = parse_scorer("pickscore=org/model,processor=org/processor")
        assert (spec.name, spec.model, spec.options) == (
            "pickscore",
            "org/model",
            {"processor": "org/processor"},
        )
        with pytest.raises(ConfigurationError, match="Unknown scorer 'nosuch'"):
            parse_scorer("nosuch=org/model")
        with pytest.raises(ConfigurationError, match="NAME=MODEL"):
            parse_scorer("pickscore")

    def test_missing_tifa_file_fails_with_a_clear_message(self, tmp_path: Path) -> None:
        result = run_command(
            ["agfsync", "evaluate", "--base", "a", "--tuned", "b", "--suite", "tifa", "-o", "x"],
            cwd=tmp_path,
        )
        assert result.returncode == 2
        assert "--tifa-qa" in result.stderr
        assert not (tmp_path / "x").exists()


# --- the reports in a browser ------------------------------------------------------------


class Dom(HTMLParser):
    """What the browser rendered: `<html>` attributes, tables by id (their text), images
    (their src, and whether they sit in a grid pair)."""

    def __init__(self) -> None:
        super().__init__()
        self.root: dict[str, str | None] = {}
        self.tables: dict[str, str] = {}
        self.images: list[tuple[str, bool]] = []
        self._table: str | None = None
        self._pairs_open = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "html":
            self.root = attributes
        elif tag == "table" and (identifier := attributes.get("id")):
            self._table = identifier
            self.tables[identifier] = ""
        elif tag == "figure" and attributes.get("class") == "pair":
            self._pairs_open += 1
        elif tag == "img":
            self.images.append((attributes.get("src") or "", self._pairs_open > 0))

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag == "figure" and self._pairs_open:
            self._pairs_open -= 1

    def handle_data(self, data: str) -> None:
        if self._table is not None:
            self.tables[self._table] += data + " "


@dataclass
class Rendered:
    dom: Dom
    console: list[str]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    pytest.skip(
        "Chromium is not installed: `apt-get install chromium` (Debian), which `make setup` "
        "runs when it has root."
    )


def open_in_browser(page: Path, profile: Path, screenshot: Path | None = None) -> Rendered:
    """Load `page` in headless Chromium; return its DOM after load and its console lines."""
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",  # needed as root (CI containers); no untrusted content here
        "--disable-gpu",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
    ]
    dumped = subprocess.run(
        [*command, "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    if screenshot is not None:
        subprocess.run(
            [*command, f"--screenshot={screenshot}", "--window-size=1280,2000", page.as_uri()],
            capture_output=True,
            timeout=120,
            check=True,
        )
    dom = Dom()
    dom.feed(dumped.stdout)
    return Rendered(dom, [line for line in dumped.stderr.splitlines() if ":CONSOLE" in line])


def assert_rendered_completely(rendered: Rendered) -> None:
    assert rendered.console == []
    assert "data-errors" not in rendered.dom.root
    assert rendered.dom.root.get("data-broken-images") == "0"


ARTIFACTS_DIR = REPO_ROOT / "test-artifacts"
"""Screenshots the browser tests leave behind (ignored by git)."""


class TestEvaluationReportInBrowser:
    def test_shows_the_table_charts_and_grids(self, evaluation: Evaluation, tmp_path: Path) -> None:
        screenshot = tmp_path / "report.png"
        rendered = open_in_browser(
            evaluation.out / "report" / "index.html", tmp_path / "profile", screenshot
        )
        assert_rendered_completely(rendered)
        summary = rendered.dom.tables["summary"]
        for label in ("TIFA accuracy (%)", "CLIP score", "aesthetic score", "visual appeal"):
            assert label in summary
        charts = [src for src, _ in rendered.dom.images if src.startswith("images/charts/")]
        assert {"images/charts/win-rates.png", "images/charts/hpsv2-clip-by-group.png"} <= set(
            charts
        )
        grid = [src for src, in_pair in rendered.dom.images if in_pair]
        assert "images/hpsv2/hpsv2-anime-000-base.png" in grid
        assert "images/hpsv2/hpsv2-anime-000-tuned.png" in grid
        assert Image.open(screenshot).size == (1280, 2000)
        # Kept after the run, for a person (or CI) to look at.
        ARTIFACTS_DIR.mkdir(exist_ok=True)
        shutil.copyfile(screenshot, ARTIFACTS_DIR / "evaluation-report.png")

    def test_a_broken_report_is_caught(self, evaluation: Evaluation, tmp_path: Path) -> None:
        """The checks above can fail: a missing chart and a script error are reported."""
        report = tmp_path / "report"
        shutil.copytree(evaluation.out / "report", report)
        (report / "images" / "charts" / "hpsv2-clip-by-group.png").unlink()
        page = report / "index.html"
        page.write_text(page.read_text().replace("</body>", "<script>notDefined()</script></body>"))
        rendered = open_in_browser(page, tmp_path / "profile")
        assert rendered.dom.root.get("data-broken-images") == "1"
        errors = rendered.dom.root.get("data-errors") or ""
        assert "hpsv2-clip-by-group.png" in errors
        assert "notDefined" in errors
        assert any("notDefined" in line for line in rendered.console)


@pytest.fixture(scope="module")
def dataset_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small preference dataset folder as `agfsync generate` writes it."""
    root = tmp_path_factory.mktemp("dataset")
    artifacts = root / "artifacts"
    artifacts.mkdir()
    rows = []
    for index, (category, prompt) in enumerate(
        [("Animals", "A fox in snow"), ("Plants", "A red tulip"), ("Animals", "Two cats")]
    ):
        paths = []
        for image_index, color in enumerate([(200, 40, 40), (40, 40, 200)]):
            Image.new("RGB", (32, 32), color).save(artifacts / f"p{index}_{image_index}.png")
            paths.append(f"p{index}_{image_index}.png")
        scores = [60.0 + index, 40.0 - index]
        rows.append(
            {
                "prompt_id": f"p{index}",
                "prompt": prompt,
                "category": category,
                "qa_pairs": [
                    {
                        "question": "Is there an animal?",
                        "answer": "yes",
                        "element_type": "animal",
                        "element": prompt.split()[-1],
                        "valid": True,
                    }
                ],
                "image_paths": paths,
                "image_seeds": [1, 2],
                "noise_sigmas": [0.0, 0.1],
                "image_model": "tiny:stable-diffusion",
                "generation_config": {"num_inference_steps": 2, "guidance_scale": 4.5},
                "clip_scores": scores,
                "aesthetic_scores": scores,
                "weighted_scores": scores,
                "chosen_index": 0,
                "rejected_index": 1,
                "chosen_score": scores[0],
                "rejected_score": scores[1],
                "score_margin": scores[0] - scores[1],
            }
        )
    scratch = root / "pairs-scratch"  # outlives the dataset, as the fixture's folder
    scratch.mkdir()
    pairs, _ = build_preference_dataset(datasets.Dataset.from_list(rows), artifacts, scratch)
    run_dir = root / "run"
    write_dataset_folder(pairs, run_dir, card=card_listing)
    RunInfo(preset="offline", seed=0).save(run_dir)
    return run_dir


class TestDatasetReport:
    def test_agfsync_report_renders_a_dataset(self, dataset_run: Path, tmp_path: Path) -> None:
        result = run_command(["agfsync", "report", str(dataset_run), "-o", "out"], cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        rendered = open_in_browser(tmp_path / "out" / "index.html", tmp_path / "profile")
        assert_rendered_completely(rendered)
        summary = " ".join(rendered.dom.tables["summary"].split())  # cells space-separated
        assert "preference pairs 3" in summary
        assert "conversion rate (pairs / prompts) 100.0%" in summary
        sources = {src for src, _ in rendered.dom.images}
        assert {
            "assets/score_distributions.png",
            "assets/score_margins.png",
            "assets/categories.png",
        } <= sources
        assert "measure" in rendered.dom.tables["summary"]  # a real header, not an empty one
        provenance = " ".join(rendered.dom.tables["provenance"].split())
        for fact in ("preset offline", "candidates per prompt (N) 2", "run seed 0", "0.1"):
            assert fact in provenance
        assert "category prompts pairs mean margin" in " ".join(
            rendered.dom.tables["categories"].split()
        )
        # Every pair can be browsed, with its images, on the pair pages.
        page = tmp_path / "out" / "pairs" / "page-001.html"
        browsed = open_in_browser(page, tmp_path / "profile-pairs")
        assert_rendered_completely(browsed)
        thumbnails = [src for src, _ in browsed.dom.images]
        assert len(thumbnails) == 6 and all(src.startswith("images/") for src in thumbnails)

    def test_a_folder_without_a_run_is_refused(self, tmp_path: Path) -> None:
        result = run_command(["agfsync", "report", str(tmp_path)], cwd=tmp_path)
        assert result.returncode == 2
        assert "run.json" in result.stderr
