"""Runs a full preset with tiny stand-ins for every model, in its own process.

distilabel starts its step processes by forking; a test process that already ran
torch computations can deadlock them, so the test runs this as a subprocess:
`python -m tests.full_preset_driver PRESET CATEGORIES OPENAI_URL IMAGE_MODEL`, which
prints one JSON line per output row.
"""

import json
import sys

from agfsync.pipelines import build_preset
from agfsync.scoring import ScorerSpec

TINY_JUDGES = {"vqa": "tiny:blip2", "clip": "tiny:clip", "aesthetic": "tiny:clip-vit-large"}


def main(preset: str, categories: str, openai_url: str, image_model: str) -> None:
    pipeline = build_preset(preset)
    steps = {name: pipeline.dag.get_step(name)["step"] for name in pipeline.dag}
    for step in steps.values():
        llm = getattr(step, "llm", None)
        if llm is not None and type(llm).__name__ == "OpenAILLM":
            llm.base_url = openai_url
    steps["judge_images"].scorers = [
        ScorerSpec(
            name=spec.name,
            model=TINY_JUDGES[spec.name],
            weight=spec.weight,
            options={"mode": "probability"} if spec.name == "vqa" else {},
        )
        for spec in steps["judge_images"].scorers
    ]
    distiset = pipeline.run(
        parameters={
            "load_categories": {"categories_file": categories, "prompts_per_category": 2},
            "deduplicate_prompts": {"method": "minhash"},
            "generate_images": {
                "model": image_model,
                "num_images": 2,
                "num_inference_steps": 2,
                "height": None,
                "width": None,
            },
        },
        use_cache=False,
    )
    for row in distiset["export_pairs"]["train"]:
        print(json.dumps(row, default=str))


if __name__ == "__main__":
    main(*sys.argv[1:])
