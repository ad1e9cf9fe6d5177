"""Rows of a run that failed in a way that running the same command again can fix.

Every step keeps a row it could not finish and records why in its own column: a
request that failed after the client's retries, an image that could not be
rendered or read, a judge that raised. Such a row is not final: the steps do not
record it in their journals, so the next run of the same command retries it while
the rest of the work is reused. Data-driven outcomes are final and not listed here:
a margin below `--min-margin`, no candidate passing the thresholds, a category whose
LLM answers repeated themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def row_failures(row: Mapping[str, Any]) -> list[str]:
    """The retryable failures recorded on `row`, each as `step: reason`."""
    failures = []
    if row.get("prompt_error"):
        failures.append(f"write_prompts: {row['prompt_error']}")
    if row.get("rewrite_error"):
        failures.append(f"rewrite_prompts: {row['rewrite_error']}")
    if row.get("prompt") and row.get("qa_error"):
        failures.append(f"decompose_prompts: {row['qa_error']}")
    if row.get("generation_error"):
        failures.append(f"generate_images: {row['generation_error']}")
    elif "image_paths" in row and row["image_paths"] is None:
        failures.append("generate_images: no images (the step failed on this row; see the log)")
    judging_errors = [error for error in row.get("judging_errors") or [] if error]
    if judging_errors:
        failures.append(f"judge_images: {judging_errors[0]}")
    elif "weighted_scores" in row and row["weighted_scores"] is None:
        failures.append("judge_images: no scores (the step failed on this row; see the log)")
    if "chosen_index" in row and row["chosen_index"] is None and not row.get("pair_error"):
        failures.append("select_pairs: no pair (the step failed on this row; see the log)")
    return failures
