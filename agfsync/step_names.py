"""The names of the presets' steps: one declaration, read by the preset builders, the
run orchestration (`agfsync.run.preset`), the estimate and the Ray placement. They are the
keys of `--param step.name=value` and of the YAML files, so they do not change."""

LOAD_PROMPTS_STEP = "load_prompts"
LOAD_CATEGORIES_STEP = "load_categories"
WRITE_PROMPTS_STEP = "write_prompts"
REWRITE_PROMPTS_STEP = "rewrite_prompts"
DEDUPLICATE_STEP = "deduplicate_prompts"
DECOMPOSE_STEP = "decompose_prompts"
GENERATE_IMAGES_STEP = "generate_images"
JUDGE_IMAGES_STEP = "judge_images"
SELECT_PAIRS_STEP = "select_pairs"
EXPORT_PAIRS_STEP = "export_pairs"

IMAGES_ARTIFACT = "images"
"""Name of the distilabel artifact folder the image step writes the candidates to
(`artifacts/<GENERATE_IMAGES_STEP>/<IMAGES_ARTIFACT>/<prompt>/<index>.<format>`)."""
