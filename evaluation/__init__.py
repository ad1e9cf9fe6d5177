"""Evaluation: measure what tuning gained, the way the AGFSync paper does.

`evaluate(config, out_dir)` renders the same prompts with the same seeds on a base
and a tuned model (cached), scores both with agfsync's engines (VQA, CLIP,
aesthetic judges, a VLM pairwise judge) on benchmark suites (TIFA, DSG-1k, HPSv2,
held-out prompts), and writes `metrics.json` and an HTML report. The command line
is `agfsync evaluate`; `agfsync report` renders a report of a preference dataset.
"""
