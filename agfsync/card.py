"""Dataset cards (README.md): what a dataset is, how it was made, how to use it.

The preference card is generated from the run alone (its rows and `run.json`), with
plots and sample pairs written as files next to it, so that a user who reads only
the card can load, reproduce and train on the dataset.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

import datasets
import yaml

from agfsync.plots import save_bar_chart, save_histograms
from agfsync.run_info import RunInfo
from agfsync.statistics import DatasetStatistics, dataset_statistics

ASSETS_DIR = "assets"
"""Folder of the card's figures and sample images, next to README.md."""
NUM_SAMPLE_PAIRS = 3
SCORE_NAMES = {
    "vqa_scores": "VQA",
    "clip_scores": "CLIP",
    "aesthetic_scores": "aesthetic",
    "pick_scores": "PickScore",
    "weighted_scores": "weighted",
}
PAPER = (
    "An, Huang et al., *AGFSync: Leveraging AI-Generated Feedback for Preference "
    "Optimization in Text-to-Image Generation*, 2024 (arXiv:2403.13352)"
)

OFFLINE_NOTE = """
> **The images of this dataset are meaningless by design.** It was produced by the
> `offline` preset, which runs the whole pipeline on tiny random models to prove the
> wiring without any download. Use a GPU preset for real data.
"""

LIMITATIONS = """\
- **AI feedback, not human judgement.** Every label comes from automatic judges (VQA
  answer accuracy, CLIP similarity, a LAION aesthetic predictor). They share the biases
  of their training data (web image–text pairs): they favour Western, photographic and
  "aesthetic" conventions, can reward text-image similarity over correctness, and the
  VQA model answers some questions wrongly. A small score margin means a weak
  preference; filter on `score_margin` or review a sample in Argilla
  (`agfsync argilla push`) before trusting it.
- **Synthetic prompts.** Prompts were written by an LLM per category (or taken from a
  prompt file): they inherit the LLM's style, topics and stereotypes, and are not a
  sample of what people ask for.
- **Both images come from one model.** The pair shows which of the base model's own
  candidates the judges preferred; it teaches the model to prefer its better outputs,
  not new concepts.
- **Safety.** Images were not filtered for content; `safety_flags` (when a checker was
  configured) records the checker's verdict without removing anything.
"""


@dataclass(frozen=True)
class SamplePair:
    prompt: str
    category: str
    chosen: str
    rejected: str
    chosen_score: float
    rejected_score: float


@dataclass(frozen=True)
class CardAssets:
    """Files written next to the card, as paths relative to it."""

    figures: dict[str, str]
    samples: list[SamplePair]


def write_card_assets(
    dataset: datasets.Dataset, stats: DatasetStatistics, folder: Path
) -> CardAssets:
    """Write the card's figures and sample images under `folder/assets/`."""
    assets = folder / ASSETS_DIR
    figures = {}
    if stats.scores:
        save_histograms(
            {SCORE_NAMES.get(k, k): v for k, v in stats.scores.items()},
            assets / "score_distributions.png",
            xlabel="score (0-100)",
        )
        figures["score distributions (every candidate)"] = "score_distributions.png"
    save_histograms(
        {"chosen - rejected": stats.margins}, assets / "score_margins.png", xlabel="score margin"
    )
    figures["score margin of the pairs"] = "score_margins.png"
    save_bar_chart(
        {"prompts": stats.prompts_per_category, "pairs": stats.pairs_per_category},
        assets / "categories.png",
        ylabel="count",
    )
    figures["prompts and pairs per category"] = "categories.png"
    samples = []
    raw = dataset.cast_column("chosen", datasets.Image(decode=False)).cast_column(
        "rejected", datasets.Image(decode=False)
    )
    for index in range(min(NUM_SAMPLE_PAIRS, len(raw))):
        row = raw[index]
        names = {}
        for role in ("chosen", "rejected"):
            suffix = Path(row[role]["path"] or "image.png").suffix or ".png"
            name = f"samples/pair-{index}-{role}{suffix}"
            (assets / name).parent.mkdir(parents=True, exist_ok=True)
            (assets / name).write_bytes(row[role]["bytes"])
            names[role] = name
        samples.append(
            SamplePair(
                prompt=row["caption"],
                category=row.get("category") or "",
                chosen=f"{ASSETS_DIR}/{names['chosen']}",
                rejected=f"{ASSETS_DIR}/{names['rejected']}",
                chosen_score=row["chosen_score"],
                rejected_score=row["rejected_score"],
            )
        )
    return CardAssets(
        figures={title: f"{ASSETS_DIR}/{name}" for title, name in figures.items()},
        samples=samples,
    )


def render_dataset_card(
    stats: DatasetStatistics,
    run: RunInfo,
    assets: CardAssets,
    *,
    load_path: str,
    data_files: dict[str, list[str]],
    license_id: str = "apache-2.0",
) -> str:
    """The preference dataset's card: Hub metadata, provenance, statistics, usage."""
    split = next(iter(data_files))
    metadata = _metadata(stats.num_pairs, data_files, license_id, "text-to-image")
    sections = [
        f"---\n{metadata}---\n",
        f"# agfsync preference dataset ({run.preset})\n",
        "A text-to-image preference dataset made with "
        "[agfsync](https://github.com/agfsync/agfsync), an implementation of AGFSync "
        f"({PAPER}): prompts decomposed into yes/no question–answer pairs, "
        f"{stats.candidates_per_prompt} candidate images per prompt, every image scored "
        "by AI judges, and the best and worst image of each prompt kept as a preference "
        "pair for Diffusion-DPO.\n",
        OFFLINE_NOTE if run.preset == "offline" else "",
        "## How it was made\n",
        _provenance_table(stats, run),
        "\nJudges, combined as `weighted = sum(weight * score)` over 0–100 scores; the "
        "candidate with the highest weighted score is `chosen`, the lowest `rejected`:\n",
        _table(
            ["judge", "model", "weight"],
            [
                [
                    markdown_text(judge.name),
                    markdown_text(judge.model or "default"),
                    f"{judge.weight:g}",
                ]
                for judge in run.judges
            ],
        ),
        "\nImage 0 of every prompt is rendered from the clean text embedding; images "
        "1..N-1 add Gaussian noise with the listed sigma to the prompt embeddings (the "
        "paper's condition-embedding noise). Each image's initial latent comes from its "
        "own seed (`image_seeds`), derived from the run seed, the prompt id and the image "
        "index, so any image can be regenerated exactly.\n",
        f"## Statistics ({split} split)\n",
        _statistics_table(stats),
        "\nScores over every candidate (mean ± std, with the means of the chosen and "
        "rejected images):\n",
        _scores_table(stats),
        "\nQuestions by type: "
        + (", ".join(f"{name} {count}" for name, count in stats.question_types.items()) or "none")
        + ".\n",
        _unpaired_lines(stats),
        _category_table(stats),
        "\n" + "\n\n".join(f"![{title}]({path})" for title, path in assets.figures.items()) + "\n",
        "## Sample pairs\n",
        _samples(assets.samples),
        "## Columns\n",
        COLUMNS,
        "## Load it\n",
        LOAD_SNIPPET.format(load_path=load_path, split=split),
        "## Train on it\n",
        TRAIN_SNIPPET.format(load_path=load_path),
        "## Reproduce it\n",
        REPRODUCE_SNIPPET.format(preset=run.preset, seed=run.seed if run.seed is not None else 0),
        "## Limitations and biases\n",
        LIMITATIONS,
        "## Citation\n",
        f"{PAPER}.\n",
    ]
    return "\n".join(section for section in sections if section)


def _provenance_table(stats: DatasetStatistics, run: RunInfo) -> str:
    config = stats.generation_config
    rows = [
        ["preset", f"`{run.preset}`"],
        *[
            [f"LLM ({markdown_text(step)})", markdown_text(model)]
            for step, model in run.llm_models.items()
        ],
        [
            "image model",
            ", ".join(markdown_text(name) for name in stats.image_models) or "unknown",
        ],
        ["candidates per prompt (N)", str(stats.candidates_per_prompt)],
        ["embedding-noise sigma", ", ".join(f"{s:g}" for s in stats.noise_sigmas) or "none"],
        ["denoising steps", str(config.get("num_inference_steps", "default"))],
        ["guidance scale", str(config.get("guidance_scale", "default"))],
        ["run seed", str(run.seed)],
    ]
    return _table(["", ""], rows)


def _statistics_table(stats: DatasetStatistics) -> str:
    low, median, high = stats.margin_quantiles()
    rows = [
        ["prompts", str(stats.num_prompts)],
        ["preference pairs", str(stats.num_pairs)],
        ["conversion rate (pairs / prompts)", f"{stats.conversion_rate:.1%}"],
        ["words per prompt", f"{stats.words_per_prompt:.2f} (paper: 26.06)"],
        ["valid questions per prompt", f"{stats.questions_per_prompt:.2f} (paper: 9.03)"],
        ["score margin (10% / 50% / 90%)", f"{low:.3f} / {median:.3f} / {high:.3f}"],
    ]
    return _table(["", ""], rows)


def _scores_table(stats: DatasetStatistics) -> str:
    rows = []
    for column in stats.scores:
        distribution = stats.score_distribution(column)
        rows.append(
            [
                f"`{column}`",
                f"{distribution.mean:.2f} ± {distribution.std:.2f}",
                f"{distribution.minimum:.2f} – {distribution.maximum:.2f}",
                f"{stats.chosen_scores[column]:.2f}",
                f"{stats.rejected_scores[column]:.2f}",
            ]
        )
    return _table(["score", "mean ± std", "range", "chosen", "rejected"], rows)


def _unpaired_lines(stats: DatasetStatistics) -> str:
    if not stats.unpaired_reasons:
        return "Every prompt produced a pair.\n"
    reasons = "; ".join(
        f"{markdown_text(reason)} ({count})" for reason, count in stats.unpaired_reasons.items()
    )
    return (
        f"{stats.num_unpaired} prompts got no pair and are not rows of this dataset "
        f"(listed with their reason in `run.json`): {reasons}.\n"
    )


def _category_table(stats: DatasetStatistics) -> str:
    return _table(
        ["category", "prompts", "pairs"],
        [
            [markdown_text(name), str(count), str(stats.pairs_per_category.get(name, 0))]
            for name, count in stats.prompts_per_category.items()
        ],
    )


def _samples(samples: list[SamplePair]) -> str:
    if not samples:
        return "No pairs.\n"
    rows = [
        [
            markdown_text(sample.prompt),
            f"![chosen]({sample.chosen}) {sample.chosen_score:.2f}",
            f"![rejected]({sample.rejected}) {sample.rejected_score:.2f}",
        ]
        for sample in samples
    ]
    return _table(["prompt", "chosen (weighted score)", "rejected (weighted score)"], rows)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]#!|~])")


def markdown_text(text: object) -> str:
    """Text from data (a prompt, a category, a model name) as inert markdown on one line:
    HTML and markdown syntax shown literally, so that it can neither break a table nor
    add links, images or markup to the card."""
    flat = " ".join(str(text).split())
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(flat, quote=False))


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


COLUMNS = """\
- `caption`, `jpg_0`, `jpg_1`, `label_0`: the Diffusion-DPO / Pick-a-Pic convention
  (`label_0 = 1` when `jpg_0` is preferred; here `jpg_0` is always the chosen image).
  Images are embedded (`datasets.Image`).
- `chosen`, `rejected`: the same two images under explicit names.
- `prompt_id`, `prompt`, `category`, `prompt_model`: the prompt stage.
- `qa_pairs`: `{question, answer, element_type, element, valid}` items the VQA judge asks.
- `image_paths`, `image_seeds`, `noise_sigmas`, `image_model`, `generation_config`: every
  candidate, with the seed and embedding-noise sigma that regenerate it.
- `vqa_scores`, `clip_scores`, `aesthetic_scores`, `weighted_scores`: per-candidate
  scores on a 0–100 scale; `vqa_answers`: per candidate, per question, the judge's
  probability of "yes"; `judging_errors`: why a candidate could not be scored.
- `chosen_index`, `rejected_index`, `chosen_score`, `rejected_score`, `score_margin`.
"""

LOAD_SNIPPET = """\
```python
from datasets import load_dataset

pairs = load_dataset("{load_path}", split="{split}")
pairs[0]["jpg_0"]  # the chosen image, a PIL image
```
"""

TRAIN_SNIPPET = """\
Diffusion-DPO on Stable Diffusion 1.5 with agfsync's trainer (LoRA; the paper's
hyper-parameters are the defaults):

```bash
accelerate launch -m agfsync.train.dpo \\
  --pretrained-model stable-diffusion-v1-5/stable-diffusion-v1-5 \\
  --dataset {load_path} --output-dir sd15-agfsync-dpo
```

diffusers' `train_diffusion_dpo.py` example reads the same `caption` / `jpg_0` /
`jpg_1` / `label_0` columns.
"""

REPRODUCE_SNIPPET = """\
```bash
pip install agfsync
agfsync generate --preset {preset} --seed {seed} -o my-dataset
```

or, with distilabel's own command and the `pipeline.yaml` of this repository:
`distilabel pipeline run --config pipeline.yaml`.
"""


PROMPT_CARD_TEMPLATE = """---
{metadata}---

# {title}

Text-to-image prompts written by an LLM per category and decomposed into validated
yes/no question–answer pairs, made with [agfsync](https://github.com/agfsync/agfsync)
(AGFSync text stage). Render and judge them with an image preset to get preference pairs.

## Statistics

{report}

## Columns

- `prompt_id`, `prompt`, `category`, `prompt_model`: the prompt stage.
- `qa_pairs`: `{{question, answer, element_type, element, valid}}` items that passed
  validation; `qa_rejected`: every dropped item with its reason; `qa_error`: why a
  prompt got no readable decomposition; `qa_usage`, `prompt_usage`: tokens spent.

## Load it

```python
from datasets import load_dataset

prompts = load_dataset("{load_path}", split="train")
```
"""


def _metadata(num_rows: int, data_files: dict[str, list[str]], license_id: str, task: str) -> str:
    return yaml.safe_dump(
        {
            "license": license_id,
            "task_categories": [task],
            "tags": ["agfsync", "preference", "dpo", "synthetic", "distilabel"],
            "size_categories": [_size_category(num_rows)],
            "configs": [
                {
                    "config_name": "default",
                    "data_files": [
                        {"split": split, "path": paths} for split, paths in data_files.items()
                    ],
                }
            ],
        },
        sort_keys=False,
    )


def render_prompt_card(
    dataset: datasets.Dataset,
    *,
    preset: str,
    report: list[str],
    load_path: str,
    data_files: list[str],
    license_id: str = "apache-2.0",
) -> str:
    """Card of a prompt + QA dataset (the text presets)."""
    return PROMPT_CARD_TEMPLATE.format(
        metadata=_metadata(len(dataset), {"train": data_files}, license_id, "text-generation"),
        title=f"agfsync prompts with QA pairs ({preset})",
        report="\n".join(f"- {markdown_text(line)}" for line in report),
        load_path=load_path,
    )


def _size_category(num_rows: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if num_rows < limit:
            return label
    return "100K<n<1M"


def preference_card(
    dataset: datasets.Dataset,
    run: RunInfo,
    folder: Path,
    *,
    load_path: str,
    data_files: dict[str, list[str]],
) -> str:
    """Compute the statistics, write the figures and samples into `folder`, and
    return the card's text."""
    stats = dataset_statistics(dataset, run)
    assets = write_card_assets(dataset, stats, folder)
    return render_dataset_card(stats, run, assets, load_path=load_path, data_files=data_files)
