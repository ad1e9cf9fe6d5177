"""HTML reports: an evaluation (base against tuned) and a preference dataset.

A report is a folder with `index.html` (inline CSS, no external resource) and its
pictures as files beside it (`images/`, `assets/`), so it opens from disk, can be
zipped or served as is. A small inline script records, on the page itself, any
resource that failed to load or script error (`data-errors` on `<html>`) and the
number of broken images once loaded (`data-broken-images`), so a browser test can
check that the page rendered completely.
"""

from __future__ import annotations

import html
import io
import math
import shutil
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from statistics import fmean
from typing import Any

import datasets
from PIL import Image

from agfsync.dataset.card import SCORE_NAMES, weights_line, write_card_assets
from agfsync.dataset.folder import IMAGE_COLUMNS
from agfsync.dataset.plots import save_bar_chart
from agfsync.dataset.publish import load_run
from agfsync.dataset.run_info import RunInfo
from agfsync.dataset.statistics import (
    NO_CATEGORY,
    DatasetStatistics,
    counts_text,
    dataset_statistics,
)
from agfsync.evaluation.metrics import ALL, STATISTICS_NOTE, Comparison, ModelRole, Observation
from agfsync.evaluation.suites import PromptItem, Suite
from agfsync.evaluation.vlm_judge import JUDGE_QUESTIONS
from agfsync.ownership import FolderKind, check_output_folder, write_folder
from agfsync.safe_paths import path_component

PAIRS_DIR = "pairs"
REPORT_ENTRIES = ("index.html", "assets/", "images/", f"{PAIRS_DIR}/")
"""The names a report folder of agfsync holds."""

METRIC_LABELS = {
    "tifa": "TIFA accuracy (%)",
    "dsg": "DSG accuracy (%)",
    "vqa": "AGFSync VQA score",
    "clip": "CLIP score",
    "aesthetic": "aesthetic score",
    "pickscore": "PickScore",
    "overall_preference": "overall preference",
    "text_fidelity": "text fidelity",
    "visual_appeal": "visual appeal",
}
GROUP_KINDS = {
    "tifa": "question type",
    "dsg": "question category",
    "hpsv2": "style",
    "vlm": "style",
    "heldout": "category",
}
"""What a suite's groups are."""
PAPER_RESULTS = {
    ("tifa", "tifa"): "SD 1.5 77.1 → 78.7; SDXL 82.0 → 83.3",
    ("hpsv2", "clip"): "win rate 57.2% (average of 3 models)",
    ("hpsv2", "aesthetic"): "win rate 61.6% (average of 3 models)",
    ("vlm", "overall_preference"): "GPT-4V: tuned preferred 62%",
    ("vlm", "text_fidelity"): "GPT-4V: tuned preferred 67%",
    ("vlm", "visual_appeal"): "GPT-4V: tuned preferred 69%",
}
"""The AGFSync paper's numbers for the same measurement, where it reports one."""

STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328;
       max-width: 1180px; margin: 2rem auto; padding: 0 1.5rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { margin-top: 2.2rem;
       border-bottom: 1px solid #d0d7de; padding-bottom: .3rem; }
.subtitle { color: #59636e; margin-top: 0; }
table { border-collapse: collapse; margin: .8rem 0; font-size: 14px; }
th, td { border: 1px solid #d0d7de; padding: .35rem .6rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.better { color: #1a7f37; font-weight: 600; } .worse { color: #cf222e; font-weight: 600; }
.charts { display: flex; flex-wrap: wrap; gap: 1rem; }
.charts figure { margin: 0; border: 1px solid #d0d7de; border-radius: 6px; padding: .5rem; }
.charts figure { overflow-x: auto; max-width: 100%; }
.charts img { display: block; }  /* native size: figures stay readable */
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(430px, 1fr)); gap: 1rem; }
.pair { border: 1px solid #d0d7de; border-radius: 6px; padding: .6rem; margin: 0; }
.pair .images { display: flex; gap: .6rem; }
.pair .images div { text-align: center; font-size: 13px; color: #59636e; }
.pair img { width: 200px; height: 200px; object-fit: contain; image-rendering: pixelated;
            background: #f6f8fa; display: block; }
.pair figcaption { font-size: 13px; margin-top: .4rem; }
.note { color: #59636e; font-size: 13px; }
"""

ERROR_HOOK = """
(function () {
  var root = document.documentElement, errors = [];
  window.addEventListener("error", function (event) {
    var target = event.target;
    errors.push(target && target.tagName
      ? target.tagName.toLowerCase() + " " + (target.getAttribute("src") || "")
      : String(event.message));
    root.setAttribute("data-errors", errors.join(" | "));
  }, true);
  window.addEventListener("load", function () {
    var broken = Array.prototype.filter.call(document.images, function (image) {
      return !image.complete || image.naturalWidth === 0;
    });
    root.setAttribute("data-broken-images", String(broken.length));
  });
})();
"""


def write_report(
    folder: Path,
    *,
    metrics: dict[str, Any],
    comparisons: Sequence[Comparison],
    observations: Sequence[Observation],
    suites: Sequence[Suite],
    image_paths: Callable[[ModelRole, PromptItem], list[Path]],
    grid_size: int,
) -> Path:
    """Write `folder/index.html` with its charts and image grids under `folder/images/`
    (called with the staging folder of `agfsync.ownership.write_folder`)."""
    (folder / "images").mkdir(parents=True)
    models = metrics["models"]
    sampling = metrics["config"]["sampling"]
    body = [
        "<h1>Evaluation: tuned against base</h1>",
        f'<p class="subtitle">base <code>{html.escape(models["base"]["label"])}</code> · tuned '
        f"<code>{html.escape(models['tuned']['label'])}</code> · "
        f"{sampling['num_inference_steps']} steps, "
        f"guidance {sampling['guidance_scale']:g}, seed {sampling['seed']}, "
        f"{sampling['images_per_prompt']} image(s) per prompt and model, same seeds for both"
        "</p>",
        "<h2>Summary</h2>",
        _summary_table([c for c in comparisons if c.group == ALL]),
        _counts_table(metrics["suites"]),
        _win_rate_chart(folder, [c for c in comparisons if c.group == ALL]),
    ]
    if metrics.get("vlm_unreadable_answers"):
        body.append(
            f'<p class="note">{metrics["vlm_unreadable_answers"]} (pair, question) verdicts of '
            "the VLM judge could not be read and are left out.</p>"
        )
    per_image = _per_image_values(observations)
    for suite in suites:
        suite_comparisons = [c for c in comparisons if c.suite == suite.name]
        body += [
            f'<section id="suite-{suite.name}"><h2>{suite.name}</h2>',
            _charts(folder, suite.name, suite_comparisons),
            _breakdown_table(suite.name, suite_comparisons),
            _grid(folder, suite, image_paths, per_image, grid_size),
            "</section>",
        ]
    body += ["<h2>Statistics</h2>", f'<p class="note">{html.escape(STATISTICS_NOTE)}</p>']
    return _write_page(folder, "agfsync evaluation", body)


def render_dataset_report(
    run_dir: Path, folder: Path, *, flag: str = "--output", overwrite: bool = False
) -> Path:
    """`folder/index.html` describing a dataset written by `agfsync generate`: sizes,
    score distributions, margins, categories and sample pairs (figures and samples
    are the dataset card's, written under `folder/assets/`). `folder` is an agfsync
    report folder (`agfsync.ownership`): only an earlier report is replaced, and never
    the dataset itself."""
    _check_report_folder(folder, run_dir, flag=flag, overwrite=overwrite)
    dataset, run = load_run(run_dir)
    return _write_report_folder(
        folder,
        run_dir,
        lambda staging: _write_dataset_report(run_dir, dataset, run, staging),
        flag=flag,
        overwrite=overwrite,
    )


def _check_report_folder(folder: Path, source: Path, *, flag: str, overwrite: bool) -> None:
    """Before any work: `folder` may hold only an earlier report, never `source`."""
    check_output_folder(
        folder,
        FolderKind.REPORT,
        flag=flag,
        overwrite=overwrite,
        reserved=REPORT_ENTRIES,
        protected=[source],
    )


def _write_report_folder(
    folder: Path,
    source: Path,
    write: Callable[[Path], object],
    *,
    flag: str,
    overwrite: bool,
) -> Path:
    """Write a report folder with `write(staging)` (agfsync.ownership's rule, `source`
    protected) and return its page."""
    write_folder(
        folder,
        FolderKind.REPORT,
        write,
        flag=flag,
        overwrite=overwrite,
        protected=[source],
        what="the report",
    )
    return folder / "index.html"


def render_calibration_report(
    calibration_dir: Path, folder: Path, *, flag: str = "--output", overwrite: bool = False
) -> Path:
    """`folder/index.html` of an `agfsync calibrate` output folder: every mix's held-out
    agreement with people and its interval, the fitted mix's paired gain over each, the
    same per category, and the verdict (the tables of the folder's README.md)."""
    from agfsync.review.calibration import (
        MIX_HEADER,
        category_rows,
        mix_rows,
        read_calibration,
    )

    _check_report_folder(folder, calibration_dir, flag=flag, overwrite=overwrite)
    calibration = read_calibration(calibration_dir)

    def escaped(rows: list[list[str]]) -> list[list[str]]:
        return [[html.escape(cell) for cell in row] for row in rows]

    body = [
        f"<h1>Judge weights calibrated: {html.escape(calibration_dir.name)}</h1>",
        f"<p>{calibration.pairs} reviewed pairs with a human choice, {calibration.folds}-fold "
        "cross-validation over prompts (95% Wilson intervals; the fitted mix's gain over "
        "each other mix with a paired bootstrap 95% interval over prompts). Left out: "
        f"{html.escape(calibration.left_out())}.</p>",
        "<h2>Held-out agreement with people</h2>",
        _table(MIX_HEADER, escaped(mix_rows(calibration)), table_id="mixes"),
        "<h2>Per category</h2>",
        _table(
            ["category", "pairs", *(html.escape(mix.name) for mix in calibration.mixes)],
            escaped(category_rows(calibration)),
            table_id="categories",
        ),
        "<h2>Verdict</h2>",
        f"<p>{html.escape(calibration.verdict)}</p>",
    ]

    return _write_report_folder(
        folder,
        calibration_dir,
        lambda staging: _write_page(staging, "agfsync calibration", body),
        flag=flag,
        overwrite=overwrite,
    )


PAIRS_PER_PAGE = 100
"""Pairs on one page of the dataset report's pair browser."""
THUMBNAIL_SIZE = 256
"""Longest side of the pair browser's images (WebP, about 10 kB each at 256 px)."""


def _write_dataset_report(
    run_dir: Path, dataset: datasets.Dataset, run: RunInfo, folder: Path
) -> Path:
    stats = dataset_statistics(dataset, run)
    assets = write_card_assets(dataset, stats, folder)
    overview = [[html.escape(cell) for cell in row] for row in stats.summary_rows()]
    config = stats.generation_config
    provenance = [
        ["preset", html.escape(run.preset)],
        ["prompts from", html.escape(run.prompt_file or "an LLM (see the LLM rows)")],
        *[
            [f"LLM ({html.escape(step)})", html.escape(model)]
            for step, model in run.llm_models.items()
        ],
        ["image model", html.escape(", ".join(stats.image_models) or "unknown")],
        ["candidates per prompt (N)", str(stats.candidates_per_prompt)],
        ["embedding-noise sigma", ", ".join(f"{s:g}" for s in stats.noise_sigmas) or "none"],
        ["denoising steps", html.escape(str(config.get("num_inference_steps", "default")))],
        ["guidance scale", html.escape(str(config.get("guidance_scale", "default")))],
        ["run seed", html.escape(str(run.seed))],
        *[
            [
                f"judge {html.escape(judge.name)}",
                f"{html.escape(judge.model or 'default')}, weight {judge.weight:.3g}",
            ]
            for judge in run.judges
        ],
        ["judge weights", html.escape(weights_line(run))],
    ]
    scores = []
    for column in stats.scores:
        distribution = stats.score_distribution(column)
        values = [distribution.mean, distribution.std]
        values += [stats.chosen_scores[column], stats.rejected_scores[column]]
        scores.append([html.escape(SCORE_NAMES.get(column, column)), *(f"{v:.2f}" for v in values)])
    pages = _write_pair_pages(dataset, folder)
    body = [
        f"<h1>Preference dataset: {html.escape(run_dir.name)}</h1>",
        f'<p class="subtitle">{html.escape(str(run_dir))}</p>',
        "<h2>Overview</h2>",
        _table(["measure", "value"], overview, table_id="summary"),
        "<h2>How it was made</h2>",
        _table(["setting", "value"], provenance, table_id="provenance"),
        "<h2>Categories</h2>",
        _table(
            ["category", "prompts", "pairs", "mean margin", "no pair (why)"],
            _category_rows(dataset, stats),
            table_id="categories",
        ),
        "<h2>Scores</h2>",
        _table(["score", "mean", "std", "chosen mean", "rejected mean"], scores),
        '<div class="charts">',
        *[_figure(path, title) for title, path in assets.figures.items()],
        "</div>",
        "<h2>Pairs</h2>",
        f"<p>Browse all {stats.num_pairs} pairs: "
        + " ".join(
            f'<a href="{html.escape(page)}">{number}</a>' for number, page in enumerate(pages, 1)
        )
        + "</p>",
    ]
    return _write_page(folder, f"agfsync dataset {run_dir.name}", body)


def _category_rows(dataset: datasets.Dataset, stats: DatasetStatistics) -> list[list[str]]:
    """Per category: prompts, pairs, their mean margin, and why the other prompts got
    no pair (ties, the minimum margin, failures; from run.json)."""
    margins: dict[str, list[float]] = defaultdict(list)
    for row in dataset.select_columns(["category", "score_margin"]):
        margins[row["category"] or NO_CATEGORY].append(row["score_margin"])
    return [
        [
            html.escape(category),
            str(prompts),
            str(stats.pairs_per_category.get(category, 0)),
            f"{fmean(margins[category]):.3f}" if margins.get(category) else "-",
            html.escape(counts_text(stats.unpaired_per_category.get(category, {}))),
        ]
        for category, prompts in stats.prompts_per_category.items()
    ]


def _thumbnail(data: bytes, path: Path) -> None:
    with Image.open(io.BytesIO(data)) as image:
        copy = image.convert("RGB")
    copy.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    copy.save(path, format="WEBP", quality=80)


def _write_pair_pages(dataset: datasets.Dataset, folder: Path) -> list[str]:
    """`pairs/page-NNN.html`, `PAIRS_PER_PAGE` pairs each (every pair of the dataset),
    with thumbnails; returns the pages' paths relative to `folder`."""
    columns = [
        "prompt_id",
        "caption",
        "category",
        *IMAGE_COLUMNS,
        "chosen_score",
        "rejected_score",
        "label_0",
    ]
    rows = dataset.select_columns([c for c in columns if c in dataset.column_names])
    count = math.ceil(len(rows) / PAIRS_PER_PAGE)
    images = folder / PAIRS_DIR / "images"
    images.mkdir(parents=True, exist_ok=True)
    pages = [f"{PAIRS_DIR}/page-{number:03d}.html" for number in range(1, count + 1)]
    for number, page in enumerate(pages):
        table = []
        for index in range(number * PAIRS_PER_PAGE, min(len(rows), (number + 1) * PAIRS_PER_PAGE)):
            row = rows[index]
            cells = []
            for column, score in (("jpg_0", "chosen_score"), ("jpg_1", "rejected_score")):
                name = f"{index:06d}-{column}.webp"
                _thumbnail(row[column], images / name)
                cells.append(f'<img src="images/{name}" alt="{column}"><br>{row[score]:.2f}')
            table.append(
                [
                    str(index),
                    html.escape(row.get("category") or ""),
                    html.escape(row["caption"]),
                    *cells,
                    f"{row.get('label_0', 1.0):g}",
                ]
            )
        links = [
            f'<a href="{Path(pages[other]).name}">{label}</a>'
            for other, label in ((number - 1, "previous"), (number + 1, "next"))
            if 0 <= other < len(pages)
        ]
        body = [
            f"<h1>Pairs, page {number + 1} of {len(pages)}</h1>",
            f'<p><a href="../index.html">back to the report</a> {" ".join(links)}</p>',
            _table(
                ["#", "category", "prompt", "jpg_0 (chosen)", "jpg_1 (rejected)", "label_0"],
                table,
                table_id="pairs",
            ),
        ]
        _write_page(folder / PAIRS_DIR, f"pairs page {number + 1}", body, name=Path(page).name)
    return pages


def _write_page(folder: Path, title: str, body: list[str], name: str = "index.html") -> Path:
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n"
        f"<script>{ERROR_HOOK}</script>\n</head>\n<body>\n"
        + "\n".join(part for part in body if part)
        + "\n</body>\n</html>\n"
    )
    path = folder / name
    path.write_text(page, encoding="utf-8")
    return path


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def is_vote_metric(metric: str) -> bool:
    """A VLM judge question: its values are vote counts, only its win rate means something."""
    return metric in JUDGE_QUESTIONS


def _summary_table(comparisons: Sequence[Comparison]) -> str:
    rows = [
        [
            html.escape(c.suite),
            html.escape(metric_label(c.metric)),
            str(c.units),
            *_means(c),
            _win_rate(c),
            html.escape(PAPER_RESULTS.get((c.suite, c.metric), "")),
        ]
        for c in comparisons
    ]
    header = ["suite", "metric", "n", "base", "tuned", "Δ tuned − base [95% CI]"]
    header += ["win rate of tuned [95% CI] (W/T/L)", "paper"]
    return _table(header, rows, table_id="summary")


def _counts_table(suites: dict[str, dict[str, int]]) -> str:
    rows = [
        [html.escape(name), str(c["prompts"]), str(c["images"]), str(c["questions"])]
        for name, c in suites.items()
    ]
    return _table(["suite", "prompts", "images (both models)", "questions"], rows)


def _breakdown_table(suite: str, comparisons: Sequence[Comparison]) -> str:
    rows = [
        [
            html.escape(metric_label(c.metric)),
            html.escape(c.group),
            str(c.units),
            *_means(c),
            _win_rate(c),
        ]
        for c in comparisons
        if c.group != ALL
    ]
    if not rows:
        return ""
    kind = GROUP_KINDS.get(suite, "group")
    header = ["metric", kind, "n", "base", "tuned", "Δ [95% CI]", "win rate [95% CI] (W/T/L)"]
    return f"<h3>By {html.escape(kind)}</h3>" + _table(header, rows)


def _means(c: Comparison) -> list[str]:
    if is_vote_metric(c.metric):
        return ["—", "—", "—"]
    interval = c.difference_interval
    sign = "better" if interval.low > 0 else "worse" if interval.high < 0 else ""
    difference = f'<span class="{sign}">{c.difference:+.2f}</span> '
    difference += f"[{interval.low:+.2f}, {interval.high:+.2f}]"
    return [f"{c.base_mean:.2f}", f"{c.tuned_mean:.2f}", difference]


def _win_rate(c: Comparison) -> str:
    rate = c.win_rate
    interval = rate.interval
    sign = "better" if interval.low > 0.5 else "worse" if interval.high < 0.5 else ""
    return (
        f'<span class="{sign}">{rate.rate:.1%}</span> [{interval.low:.1%}, {interval.high:.1%}] '
        f"({rate.wins}/{rate.ties}/{rate.losses})"
    )


def _win_rate_chart(folder: Path, comparisons: Sequence[Comparison]) -> str:
    name = "images/charts/win-rates.png"
    save_bar_chart(
        {
            "win rate of tuned (%)": {
                f"{c.suite}: {metric_label(c.metric)}": 100 * c.win_rate.rate for c in comparisons
            }
        },
        folder / name,
        ylabel="win rate of tuned over base (%); 50 = no difference",
    )
    return '<div class="charts">' + _figure(name, "win rate of tuned over base") + "</div>"


def _charts(folder: Path, suite: str, comparisons: Sequence[Comparison]) -> str:
    """One chart per metric, broken down by the suite's groups."""
    charts = []
    kind = GROUP_KINDS.get(suite, "group")
    by_metric: dict[str, list[Comparison]] = defaultdict(list)
    for c in comparisons:
        if c.group != ALL:
            by_metric[c.metric].append(c)
    for metric, groups in by_metric.items():
        label = metric_label(metric)
        name = f"images/charts/{suite}-{path_component(metric)}-by-group.png"
        if is_vote_metric(metric):
            series = {"win rate of tuned (%)": {c.group: 100 * c.win_rate.rate for c in groups}}
        else:
            series = {
                "base": {c.group: c.base_mean for c in groups},
                "tuned": {c.group: c.tuned_mean for c in groups},
            }
        save_bar_chart(series, folder / name, ylabel=label, title=f"{label} by {kind}")
        charts.append(_figure(name, f"{label} by {kind}"))
    return '<div class="charts">' + "".join(charts) + "</div>"


def _per_image_values(
    observations: Sequence[Observation],
) -> dict[tuple[str, str, ModelRole], dict[str, float]]:
    """(suite, prompt id, model) -> metric -> mean value over its images (group all)."""
    values: dict[tuple[str, str, ModelRole], dict[str, list[float]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for item in observations:
        if item.group == ALL and not math.isnan(item.value):
            values[(item.suite, item.unit, item.model)][item.metric].append(item.value)
    return {
        key: {metric: fmean(found) for metric, found in metrics.items()}
        for key, metrics in values.items()
    }


def _grid(
    folder: Path,
    suite: Suite,
    image_paths: Callable[[ModelRole, PromptItem], list[Path]],
    per_image: dict[tuple[str, str, ModelRole], dict[str, float]],
    grid_size: int,
) -> str:
    """The first images of the first `grid_size` prompts, base beside tuned."""
    pairs = []
    for item in suite.items[:grid_size]:
        cells = []
        for role in ("base", "tuned"):
            source = image_paths(role, item)[0]
            name = f"images/{suite.name}/{path_component(item.id)}-{role}{source.suffix}"
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, folder / name)
            values = per_image.get((suite.name, item.id, role), {})
            scores = ", ".join(
                f"{metric_label(metric)} {value:.1f}"
                for metric, value in values.items()
                if not is_vote_metric(metric)
            )
            cells.append(
                f'<div><img src="{name}" alt="{role}">{role}'
                f"{'<br>' + html.escape(scores) if scores else ''}</div>"
            )
        pairs.append(
            f'<figure class="pair"><div class="images">{"".join(cells)}</div>'
            f"<figcaption><code>{html.escape(item.id)}</code> {html.escape(item.prompt)}"
            "</figcaption></figure>"
        )
    return f'<h3>Images (base left, tuned right)</h3><div class="grid">{"".join(pairs)}</div>'


def _figure(source: str, caption: str) -> str:
    return (
        f'<figure><img src="{html.escape(source)}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _table(header: list[str], rows: list[list[str]], table_id: str | None = None) -> str:
    """An HTML table; cells are HTML already (escaped by the caller)."""
    identifier = f' id="{table_id}"' if table_id else ""
    head = "".join(f"<th>{cell}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table{identifier}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
