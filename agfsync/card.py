"""The dataset card (README.md) written next to a generated dataset."""

from __future__ import annotations

from collections import Counter
from statistics import mean

import datasets
import yaml

CARD_TEMPLATE = """---
{metadata}---

# {title}

A text-to-image preference dataset built with [agfsync](https://github.com/agfsync/agfsync),
an implementation of AGFSync (An, Huang et al., 2024): prompts with yes/no question–answer
pairs, {num_images} candidate images per prompt from `{image_model}`, each image scored by
AI judges, and the best and worst image of each prompt kept as a preference pair.
{offline_note}
## Summary

| | |
|---|---|
| preset | `{preset}` |
| prompts with a pair | {num_rows} |
| prompts without a pair | {num_unpaired} |
| candidates per prompt | {num_images} |
| judges (weight) | {judges} |
| mean score margin | {mean_margin:.3f} |

Prompts per category:

| category | prompts |
|---|---|
{category_rows}

## Columns

- `caption`, `jpg_0`, `jpg_1`, `label_0`: the Diffusion-DPO / Pick-a-Pic convention
  (`label_0 = 1` when `jpg_0` is preferred; here `jpg_0` is always the chosen image).
- `chosen`, `rejected`: the same two images under explicit names.
- `prompt_id`, `prompt`, `category`, `prompt_model`, `qa_pairs`: the prompt stage.
- `image_paths`, `image_seeds`, `noise_sigmas`, `image_model`, `generation_config`: every
  candidate (paths relative to `artifacts/`), with the seed and embedding-noise sigma that
  regenerate it.
- `*_scores`, `weighted_scores`: per-candidate judge scores on a 0–100 scale.
- `chosen_index`, `rejected_index`, `chosen_score`, `rejected_score`, `score_margin`.

## Load it

```python
from datasets import load_dataset

dataset = load_dataset("{load_path}", split="train")
```
"""

OFFLINE_NOTE = """
> **The images of this dataset are meaningless by design.** It was produced by the
> `offline` preset, which runs the whole pipeline on tiny random models to prove the
> wiring without any download. Use a GPU preset for real data.
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


def _metadata(num_rows: int, data_files: list[str], license_id: str, task: str) -> str:
    return yaml.safe_dump(
        {
            "license": license_id,
            "task_categories": [task],
            "tags": ["agfsync", "preference", "dpo", "synthetic", "distilabel"],
            "size_categories": [_size_category(num_rows)],
            "configs": [
                {"config_name": "default", "data_files": [{"split": "train", "path": data_files}]}
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
        metadata=_metadata(len(dataset), data_files, license_id, "text-generation"),
        title=f"agfsync prompts with QA pairs ({preset})",
        report="\n".join(f"- {line}" for line in report),
        load_path=load_path,
    )


def _size_category(num_rows: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if num_rows < limit:
            return label
    return "100K<n<1M"


def render_dataset_card(
    dataset: datasets.Dataset,
    *,
    preset: str,
    num_unpaired: int,
    judges: dict[str, float],
    load_path: str,
    data_files: list[str],
    license_id: str = "apache-2.0",
) -> str:
    """Markdown card with Hub YAML metadata, summary statistics and a loading snippet."""
    categories = Counter(dataset["category"]) if len(dataset) else Counter()
    first = dataset[0] if len(dataset) else {}
    return CARD_TEMPLATE.format(
        metadata=_metadata(len(dataset), data_files, license_id, "text-to-image"),
        title=f"agfsync preference dataset ({preset})",
        num_images=len(first.get("image_paths", [])),
        image_model=first.get("image_model", "unknown"),
        offline_note=OFFLINE_NOTE if preset == "offline" else "",
        preset=preset,
        num_rows=len(dataset),
        num_unpaired=num_unpaired,
        judges=", ".join(f"{name} ({weight:g})" for name, weight in judges.items()),
        mean_margin=mean(dataset["score_margin"]) if len(dataset) else 0.0,
        category_rows="\n".join(
            f"| {name} | {count} |" for name, count in sorted(categories.items())
        ),
        load_path=load_path,
    )
