"""Prompts and their questions (stages 1 and 2), without models.

- `prompt_files`: the shipped sample and users' JSONL/JSON prompt files.
- `categories`: what the prompt-writing LLM is asked to write about.
- `qa`: the yes/no question-answer pairs of a prompt (`qa_pairs`).
- `dedup`: near-duplicate prompts; `compare`: comparing texts.
"""
