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
    metadata = {
        "license": license_id,
        "task_categories": ["text-to-image"],
        "tags": ["agfsync", "preference", "dpo", "synthetic", "distilabel"],
        "size_categories": [_size_category(len(dataset))],
        "configs": [
            {"config_name": "default", "data_files": [{"split": "train", "path": data_files}]}
        ],
    }
    categories = Counter(dataset["category"]) if len(dataset) else Counter()
    first = dataset[0] if len(dataset) else {}
    return CARD_TEMPLATE.format(
        metadata=yaml.safe_dump(metadata, sort_keys=False),
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
