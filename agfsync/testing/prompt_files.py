"""Prompt files of any length, for scale tests and benchmarks of the offline preset."""

from __future__ import annotations

import json
from pathlib import Path

from agfsync.text.prompt_files import SAMPLE_PROMPTS_PATH


def write_scaled_prompts(path: Path, count: int) -> Path:
    """Write `count` distinct prompts: the shipped sample cycled, each copy with its own
    `prompt_id` and a numbered variant of the text, its QA pairs kept."""
    sample = [json.loads(line) for line in SAMPLE_PROMPTS_PATH.read_text().splitlines() if line]
    with path.open("w", encoding="utf-8") as handle:
        for index in range(count):
            record = dict(sample[index % len(sample)])
            record["prompt_id"] = f"{record['prompt_id']}-{index:05d}"
            record["prompt"] = f"{record['prompt']} (variant {index})"
            handle.write(json.dumps(record) + "\n")
    return path
