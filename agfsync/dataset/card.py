"""Dataset cards (README.md): what a dataset is, how it was made, how to use it.

The preference card is generated from the run alone (its rows and `run.json`), with
plots and sample pairs written as files next to it, so that a user who reads only
the card can load, reproduce and train on the dataset.
"""

from __future__ import annotations

import html
import io
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets
from huggingface_hub import DatasetCardData
from PIL import Image

from agfsync.dataset.folder import IMAGE_COLUMNS, IMAGES_CONFIG, card_configs
from agfsync.dataset.plots import save_bar_chart, save_histograms
from agfsync.dataset.run_info import RunInfo
from agfsync.dataset.statistics import DatasetStatistics, counts_text, dataset_statistics
from agfsync.hub import AGFSYNC_TAG
from agfsync.model_facts import model_facts
from agfsync.step_names import DECOMPOSE_STEP

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
- {prompts}
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


def image_suffix(data: bytes) -> str:
    """The file suffix of encoded image bytes (`.png`, `.jpg`, `.webp`)."""
    kind = (Image.open(io.BytesIO(data)).format or "PNG").lower()
    return ".jpg" if kind == "jpeg" else f".{kind}"


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
        counts=True,
    )
    figures["prompts and pairs per category"] = "categories.png"
    samples = []
    shown = ["caption", "category", *IMAGE_COLUMNS, "chosen_score", "rejected_score"]
    rows = dataset.select_columns(shown)
    for index in range(min(NUM_SAMPLE_PAIRS, len(rows))):
        row = rows[index]
        names = {}
        for role, column in (("chosen", "jpg_0"), ("rejected", "jpg_1")):
            name = f"samples/pair-{index}-{role}{image_suffix(row[column])}"
            (assets / name).parent.mkdir(parents=True, exist_ok=True)
            (assets / name).write_bytes(row[column])
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
    features: datasets.Features,
    load_path: str,
    data_files: dict[str, list[str]],
) -> str:
    """The preference dataset's card: Hub metadata, provenance, statistics, and how
    each tool reads it. Everything it says is taken from the run (`run.json`) and the
    rows."""
    split = next(iter(data_files))
    license_id, license_note = dataset_license(
        stats.image_models, list(run.llm_models.values()), prompt_file=run.options.prompts_file
    )
    card_data = _card_data(
        pretty_name=f"agfsync preference pairs ({run.preset})",
        license_id=license_id,
        task="text-to-image",
        num_rows=stats.num_pairs,
        tags=["text-to-image", "diffusion-dpo", *model_family_tags(stats.image_models)],
        features=features,
        data_files=data_files,
    )
    sections = [
        f"---\n{card_data.to_yaml()}\n---\n",
        f"# agfsync preference dataset ({markdown_text(run.preset)})\n",
        f"A text-to-image preference dataset made with agfsync {run.agfsync_version}, an "
        f"implementation of AGFSync ({PAPER}): {_prompt_origin(run)}, decomposed into "
        f"yes/no question–answer pairs; {stats.candidates_per_prompt} candidate images "
        "per prompt, every image scored by AI judges, and the best and worst image of "
        "each prompt kept as a preference pair for Diffusion-DPO.\n",
        OFFLINE_NOTE if run.preset == "offline" else "",
        f"**License**: {license_note}\n",
        "## How it was made\n",
        _provenance_table(stats, run),
        "\nJudges, combined as `weighted = sum(weight * score)` over 0–100 scores; the "
        "candidate with the highest weighted score is `chosen` (`jpg_0`), the lowest "
        "`rejected` (`jpg_1`):\n",
        markdown_table(
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
        f"\n**Weights**: {markdown_text(weights_line(run))}.\n",
        "\nImage 0 of every prompt is rendered from the clean text embedding; images "
        "1..N-1 add Gaussian noise with the listed sigma to the prompt embeddings (the "
        "paper's condition-embedding noise). Each image's initial latent comes from its "
        "own seed (`image_seeds`), derived from the run seed, the prompt id and the image "
        "index, so any image can be regenerated exactly.\n",
        f"## Statistics ({split} split)\n",
        markdown_table(["statistic", "value"], stats.summary_rows()),
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
        "## Use it\n",
        _use_section(load_path, split, stats.num_ties),
        "## Columns\n",
        COLUMNS,
        "## Reproduce it\n",
        REPRODUCE_SNIPPET.format(command=reproduce_command(run), files=_files_not_included(run)),
        "## Limitations and biases\n",
        _limitations(run),
        "## Citation\n",
        f"{PAPER}.\n",
    ]
    return "\n".join(section for section in sections if section)


def _prompt_origin(run: RunInfo) -> str:
    """Where the prompts came from, as the run recorded it."""
    writers = [model for step, model in run.llm_models.items() if step != DECOMPOSE_STEP]
    if writers:
        return "prompts written by an LLM (" + ", ".join(markdown_text(m) for m in writers) + ")"
    if run.prompt_file:
        return f"prompts read from a file ({markdown_text(run.prompt_file)})"
    return "prompts from the sample shipped with agfsync"


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
    return markdown_table(["setting", "value"], rows)


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
    return markdown_table(["score", "mean ± std", "range", "chosen", "rejected"], rows)


def _unpaired_lines(stats: DatasetStatistics) -> str:
    kept = f" ({stats.num_ties} of them ties, kept with `label_0 = 0.5`)" if stats.num_ties else ""
    if not stats.unpaired_reasons:
        return f"Every prompt produced a pair{kept}.\n"
    return (
        f"{stats.num_unpaired} prompts got no pair and are not rows of this dataset "
        f"(listed with their reason in `run.json`): "
        f"{markdown_text(counts_text(stats.unpaired_reasons))}.\n"
    )


def _category_table(stats: DatasetStatistics) -> str:
    return markdown_table(
        ["category", "prompts", "pairs", "no pair (why)"],
        [
            [
                markdown_text(name),
                str(count),
                str(stats.pairs_per_category.get(name, 0)),
                markdown_text(counts_text(stats.unpaired_per_category.get(name, {}))),
            ]
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
    return markdown_table(["prompt", "chosen (weighted score)", "rejected (weighted score)"], rows)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]#!|~])")


@dataclass(frozen=True)
class LicensedPart:
    """A part of a dataset and the license it comes under."""

    part: str
    """What it is, e.g. "the images"."""
    license: str | None
    """Hub license id; None: agfsync does not know it."""
    origin: str
    """Where the part comes from (markdown), e.g. "the image model (x)"."""
    binding: bool = True
    """False: the data is the user's own (their prompt file), so its terms are theirs to
    give, and it does not decide the card's license."""

    def sentence(self) -> str:
        if not self.binding:
            return f"{self.part} come from {self.origin}, under the terms you give them"
        if self.license is None:
            return (
                f"{self.part} come from {self.origin}, whose license agfsync does not know: "
                "check it before you share or use them"
            )
        return f"{self.part} come from {self.origin}, under `{self.license}`"


def models_license(models: list[str]) -> str | None:
    """The one license all `models` share; None when one is unknown or they differ."""
    licenses = {fact.license if fact else None for fact in map(model_facts, models)}
    return licenses.pop() if len(licenses) == 1 else None


def _names(models: list[str]) -> str:
    return ", ".join(markdown_text(model) for model in models) or "unknown"


def text_part(llm_models: list[str], prompt_file: str | None = None) -> LicensedPart:
    """The prompts and QA pairs: the LLM's output (its provider's terms), the user's
    own prompt file (`prompt_file`), or else the sample shipped with agfsync."""
    part = "the prompts and QA pairs"
    if llm_models:
        return LicensedPart(part, models_license(llm_models), f"the LLM ({_names(llm_models)})")
    if prompt_file is not None:
        return LicensedPart(
            part, None, f"your prompt file ({markdown_text(prompt_file)})", binding=False
        )
    return LicensedPart(part, "apache-2.0", "the prompt file shipped with agfsync")


def combined_license(parts: list[LicensedPart]) -> tuple[str, str]:
    """The card's license id and its sentence: the license every binding part shares,
    or `other` naming each part's license when one is unknown or they differ."""
    licenses = {part.license for part in parts if part.binding}
    by_part = "; ".join(part.sentence() for part in parts)
    license_id = licenses.pop() if len(licenses) == 1 else None
    if license_id is not None:
        return license_id, f"`{license_id}`: {by_part}."
    return "other", (
        f"`other`, as the parts of this dataset come under different or unknown terms: {by_part}."
    )


def dataset_license(
    image_models: list[str], llm_models: list[str], *, prompt_file: str | None = None
) -> tuple[str, str]:
    """The license of a preference dataset, from the models that made its images and
    its text (see `combined_license`); the scores are released with them."""
    images = LicensedPart(
        "the images", models_license(image_models), f"the image model ({_names(image_models)})"
    )
    return combined_license([images, text_part(llm_models, prompt_file)])


def text_license(llm_models: list[str]) -> tuple[str, str]:
    """The license of a prompt dataset: LLM output falls under its provider's terms."""
    return combined_license([text_part(llm_models)])


def model_family_tags(models: list[str]) -> list[str]:
    return sorted({fact.family for fact in map(model_facts, models) if fact is not None})


def weights_line(run: RunInfo) -> str:
    """Where the run's judge weights came from, and, when fitted to human reviews, how
    well they agree with people (the card's and the report's words)."""
    if run.weights is not None:
        line = run.weights.describe()
        if run.reselected_from:
            line += (
                f"; the pairs were re-selected with them from the recorded scores of "
                f"{run.reselected_from} (nothing rendered or judged again)"
            )
        if run.weights.verdict:
            line += f". Calibration's verdict: {run.weights.verdict.rstrip('.')}"
        return line
    if run.weights_source:  # run.json written before `weights` was recorded
        return run.weights_source
    return "the preset's, set by hand (not fitted to human reviews)"


def markdown_text(text: object) -> str:
    """Text from data (a prompt, a category, a model name) as inert markdown on one line:
    HTML and markdown syntax shown literally, so that it can neither break a table nor
    add links, images or markup to the card."""
    flat = " ".join(str(text).split())
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(flat, quote=False))


def code_text(text: str) -> str:
    """Text from data as inline code on one line (as inert text when it holds a backtick,
    which would end the code span)."""
    flat = " ".join(text.split())
    return markdown_text(flat) if "`" in flat else f"`{flat}`"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table; cells are markdown already (`markdown_text` for text from data)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


COLUMNS = """\
- `caption`, `jpg_0`, `jpg_1`, `label_0`: the Pick-a-Pic v2 / Diffusion-DPO columns.
  `jpg_0` is the chosen image and `jpg_1` the rejected one, as image bytes (`binary`;
  typed `Image` in the `images` config); `label_0` is 1 (0.5 for a tie, exported only
  with `--keep-ties`; 0 after a human review preferred `jpg_1`).
- `prompt_id`, `prompt`, `category`, `prompt_model`: the prompt stage.
- `qa_pairs`: `{question, answer, element_type, element, valid}` items the VQA judge asks.
- `image_paths`, `image_seeds`, `noise_sigmas`, `image_model`, `generation_config`: every
  candidate, with the seed and embedding-noise sigma that regenerate it; `safety_flags`:
  a safety checker's verdicts when one was configured (never applied).
- `vqa_scores`, `clip_scores`, `aesthetic_scores`, `weighted_scores` (and the scores of
  any other judge): per-candidate scores on a 0–100 scale; `vqa_answers`: per candidate,
  per question, the judge's probability of "yes"; `clip_truncated`: whether the prompt
  was longer than CLIP's 77 tokens (the CLIP score saw only its start).
- `chosen_index`, `rejected_index`, `chosen_score`, `rejected_score`, `score_margin`.
- `generation_error`, `judging_errors`, `pair_error`, `export_error`: why a step could
  not finish on the row (empty on every row of a finished dataset).
"""


def _use_section(load_path: str, split: str, num_ties: int) -> str:
    """Which config and options each tool reads the dataset with (each line is tested)."""
    rows = [
        [
            "diffusers' `train_diffusion_dpo.py` (SD 1.x), `train_diffusion_dpo_sdxl.py`",
            f"`--dataset_name {load_path} --dataset_split_name {split}`: the default config, "
            "`caption`, `jpg_0`, `jpg_1` (bytes), `label_0`",
        ],
        ["agfsync's trainer", f"`agfsync train --dataset {load_path}`"],
        [
            "`datasets`",
            f'`load_dataset("{load_path}", split="{split}")` gives the images as bytes; '
            f'`load_dataset("{load_path}", "{IMAGES_CONFIG}", split="{split}")` decodes them',
        ],
        ["the Hub viewer", f"the `{IMAGES_CONFIG}` config shows `jpg_0` / `jpg_1` as pictures"],
    ]
    return (
        markdown_table(["tool", "how it reads this dataset"], rows)
        + USE_COMMAND.format(load_path=load_path, split=split)
        + _ties_note(num_ties)
    )


def _ties_note(num_ties: int) -> str:
    if not num_ties:
        return "\nThis dataset holds no ties (`label_0 = 0.5`).\n"
    return (
        f"\n**Ties kept: {num_ties}.** Their rows have `label_0 = 0.5` (made with "
        "`--keep-ties`): "
        "diffusers' scripts read them as a win of `jpg_0`; drop them first with "
        '`dataset.filter(lambda row: row["label_0"] != 0.5)` (`agfsync train` skips them).\n'
    )


USE_COMMAND = """
```bash
accelerate launch train_diffusion_dpo.py \\
  --pretrained_model_name_or_path stable-diffusion-v1-5/stable-diffusion-v1-5 \\
  --dataset_name {load_path} --dataset_split_name {split} --output_dir sd15-dpo
```
"""


REPRODUCE_SNIPPET = """\
Install agfsync from its source repository (it is not published on PyPI), then:

```bash
{command}
```
{files}
Or run the same pipeline with distilabel's own command and the `pipeline.yaml` of this
repository: `distilabel pipeline run --config pipeline.yaml`.
"""


def reproduce_command(run: RunInfo) -> str:
    """The `agfsync generate` command with every option of the run that changed its
    data (files by name: whoever reproduces it brings their own copy)."""
    flags = [
        ("--preset", run.preset),
        *run.options.flags(),
        ("--seed", str(run.seed if run.seed is not None else 0)),
    ]
    if run.min_margin:
        flags.append(("--min-margin", f"{run.min_margin:g}"))
    words = [f"{flag} {shlex.quote(' '.join(value.split()))}" for flag, value in flags]
    if run.keep_ties:
        words.append("--keep-ties")
    return " ".join(["agfsync generate", *words, "-o my-dataset"])


def _files_not_included(run: RunInfo) -> str:
    """The files the command names, which are not part of this dataset, and where
    their content is."""
    files = [
        (
            run.options.prompts_file,
            "prompt file",
            "its prompts and QA pairs are the `prompt`, `category` and `qa_pairs` columns "
            "(the prompts that got no pair are in `run.json`)",
        ),
        (
            run.options.categories_file,
            "categories file",
            "its categories are the `category` column",
        ),
        (run.options.weights_file, "weights file", "its weights are in the judges table above"),
    ]
    lines = [
        f"- the {kind} {code_text(name)} is not part of this dataset; {where}.\n"
        for name, kind, where in files
        if name is not None
    ]
    return "\nBring your own copy of the files it names:\n\n" + "".join(lines) if lines else ""


def _limitations(run: RunInfo) -> str:
    prompts = (
        "**Synthetic prompts.** Prompts were written by an LLM per category: they inherit "
        "the LLM's style, topics and stereotypes, and are not a sample of what people ask "
        "for."
        if any(step != DECOMPOSE_STEP for step in run.llm_models)
        else "**Chosen prompts.** Prompts were read from a file: they reflect whoever wrote "
        "them, not what people ask for in general."
    )
    return LIMITATIONS.format(prompts=prompts)


PROMPT_CARD_TEMPLATE = """---
{metadata}
---

# {title}

Text-to-image prompts written by {models} per category and decomposed into validated
yes/no question–answer pairs, made with agfsync (AGFSync's text stage). Render and judge
them with an image preset to get preference pairs.

**License**: {license_note}

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


BASE_TAGS = (AGFSYNC_TAG, "rlaif", "preference", "dpo", "synthetic", "distilabel")


def _card_data(
    *,
    pretty_name: str,
    license_id: str,
    task: str,
    num_rows: int,
    tags: list[str],
    features: datasets.Features,
    data_files: dict[str, list[str]],
) -> DatasetCardData:
    """The card's YAML metadata, through huggingface_hub's own card data class."""
    configs, infos = card_configs(features, data_files)
    card_data = DatasetCardData(
        license=license_id,
        pretty_name=pretty_name,
        language=["en"],
        task_categories=[task],
        size_categories=[size_category(num_rows)],
        tags=list(dict.fromkeys([*BASE_TAGS, *tags])),
        configs=configs,
    )
    infos.to_dataset_card_data(card_data)
    return card_data


def render_prompt_card(
    dataset: datasets.Dataset,
    *,
    preset: str,
    report: list[str],
    load_path: str,
    data_files: list[str],
    llm_models: list[str],
) -> str:
    """Card of a prompt + QA dataset (the text presets)."""
    license_id, license_note = text_license(llm_models)
    card_data = _card_data(
        pretty_name=f"agfsync prompts with QA pairs ({preset})",
        license_id=license_id,
        task="text-generation",
        num_rows=len(dataset),
        tags=["text-to-image-prompts"],
        features=dataset.features,
        data_files={"train": data_files},
    )
    return PROMPT_CARD_TEMPLATE.format(
        metadata=card_data.to_yaml(),
        title=f"agfsync prompts with QA pairs ({markdown_text(preset)})",
        models=", ".join(markdown_text(model) for model in llm_models) or "an LLM",
        license_note=license_note,
        report="\n".join(f"- {markdown_text(line)}" for line in report),
        load_path=load_path,
    )


SIZE_CATEGORIES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
    (10_000_000_000, "1B<n<10B"),
    (100_000_000_000, "10B<n<100B"),
    (1_000_000_000_000, "100B<n<1T"),
)
"""The Hub's `size_categories` values, by upper bound."""


def size_category(num_rows: int) -> str:
    for limit, label in SIZE_CATEGORIES:
        if num_rows < limit:
            return label
    return "n>1T"


def card_writer(
    dataset: datasets.Dataset,
    run: RunInfo,
    *,
    load_path: str,
    split: str = "train",
    other_splits: dict[str, list[str]] | None = None,
    extra: str = "",
) -> Callable[[list[str], Path], str]:
    """The `card` callback of `agfsync.dataset.folder.write_dataset_folder` for a preference
    dataset: saves run.json beside the card and renders the card (plus `extra`, a further
    section) for the shards just written."""

    def write(data_files: list[str], folder: Path) -> str:
        run.save(folder)
        files = {split: data_files, **(other_splits or {})}
        card = preference_card(dataset, run, folder, load_path=load_path, data_files=files)
        return card + (f"\n{extra}" if extra else "")

    return write


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
    return render_dataset_card(
        stats, run, assets, features=dataset.features, load_path=load_path, data_files=data_files
    )
