"""The offline preset end to end against its slowest engine running alone.

What it measures, at each `--resolutions` entry and in one run:

- **engines alone**, in this process: the offline preset's own image step and judging
  step (model, denoising steps, guidance, batch sizes and judges read from the preset,
  height and width set to the resolution) are loaded, and their engines do the run's
  work with nothing else around them: the image engine renders every prompt's
  candidates in the step's input batches (`CandidateImageGenerator.generate`, images
  kept in memory, nothing written), then the judges score those images in the judging
  step's batches (one `JudgeImages` per batch, every judge, from memory). Load and work
  are timed separately.
- **the pipeline**: `agfsync generate --preset offline --resolution R` on the same
  prompt file, a fresh process in a fresh distilabel cache, timed from launch to exit:
  start-up, preflight, distilabel's step processes, PNG writing and reading, the
  dataset folder and its card all included.

The ratio is the pipeline's wall time over the slowest engine's load + work (and, to
show what the fixed costs are, over its work alone). Rounds alternate engines and
pipeline, and the best of each is kept.

Example:
    python benchmarks/pipeline_overhead.py --resolutions 128,256 --prompts 48,8 --json overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from run_scaling import step_times

from agfsync.generation import plan_jobs
from agfsync.pipelines import build_preset
from agfsync.scoring.pixels import JudgeImages
from agfsync.step_names import GENERATE_IMAGES_STEP, JUDGE_IMAGES_STEP
from agfsync.testing.prompt_files import write_scaled_prompts
from agfsync.text.prompt_files import load_prompt_records

PRESET = "offline"


def batches(rows: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [rows[start : start + size] for start in range(0, len(rows), size)]


def engines_alone(prompt_file: Path, resolution: int) -> dict[str, float]:
    """Load and work seconds of the preset's image engine and judges, each alone."""
    pipeline = build_preset(PRESET)
    image_step: Any = pipeline.dag.get_step(GENERATE_IMAGES_STEP)["step"]
    judge_step: Any = pipeline.dag.get_step(JUDGE_IMAGES_STEP)["step"]
    image_step.height = image_step.width = resolution
    rows = load_prompt_records(prompt_file)

    started = time.perf_counter()
    image_step.load()
    loaded = time.perf_counter()
    config = image_step._config()
    rendered: list[tuple[list[dict[str, Any]], list[Any]]] = []
    for batch in batches(rows, image_step.input_batch_size):
        jobs = plan_jobs([row["prompt_id"] for row in batch], config)
        prompts = [row["prompt"] for row in batch]
        images = [image for _, image in image_step._generator.generate(prompts, jobs, config)]
        rendered.append((batch, images))
    done = time.perf_counter()
    result = {"image_load_s": loaded - started, "image_work_s": done - loaded}
    image_step.unload()

    started = time.perf_counter()
    judge_step.load()
    loaded = time.perf_counter()
    columns = judge_step._context_columns()
    images_per_row = config.num_images
    for batch, images in rendered:
        shared = JudgeImages(images)
        prompts = [row["prompt"] for row in batch for _ in range(images_per_row)]
        context = {
            column: [row.get(column) for row in batch for _ in range(images_per_row)]
            for column in columns
        }
        for spec in judge_step.scorers:
            judge_step._judges[spec.name].score(shared, prompts, **context)
    done = time.perf_counter()
    judge_step.unload()
    result |= {"judge_load_s": loaded - started, "judge_work_s": done - loaded}
    result["images"] = sum(len(images) for _, images in rendered)
    return result


def pipeline_run(prompt_file: Path, resolution: int, work_dir: Path) -> dict[str, float]:
    """Wall seconds of `agfsync generate` in a fresh cache, and its steps' busy times."""
    cache = Path(tempfile.mkdtemp(prefix="cache-", dir=work_dir))
    output = work_dir / f"dataset-{resolution}-{cache.name}"
    command = [
        *(sys.executable, "-m", "agfsync", "generate", "--preset", PRESET),
        *("--prompts", os.fspath(prompt_file), "--resolution", str(resolution)),
        *("-o", os.fspath(output)),
    ]
    environment = {**os.environ, "DISTILABEL_CACHE_DIR": os.fspath(cache)}
    started = time.perf_counter()
    completed = subprocess.run(command, env=environment, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"agfsync generate failed:\n{completed.stderr[-3000:]}")
    result: dict[str, float] = {"pipeline_wall_s": wall}
    log = output / "pipeline.log"
    if log.is_file():
        times = step_times(log)
        result |= {key: value for key, value in times.items() if key.endswith("_busy_s")}
    return result


def best(rounds: list[dict[str, float]], key: str) -> float:
    return min(round_[key] for round_ in rounds)


def summarize(
    resolution: int, prompts: int, engines: list[dict[str, float]], runs: list[dict[str, float]]
) -> dict[str, Any]:
    image = best(engines, "image_load_s") + best(engines, "image_work_s")
    judges = best(engines, "judge_load_s") + best(engines, "judge_work_s")
    slowest, slowest_name = max((image, "image"), (judges, "judge"))
    slowest_work = best(engines, f"{slowest_name}_work_s")
    wall = best(runs, "pipeline_wall_s")
    return {
        "resolution": resolution,
        "prompts": prompts,
        "images": engines[0]["images"],
        "image_engine_s": image,
        "judges_s": judges,
        "slowest": slowest_name,
        "pipeline_wall_s": wall,
        "ratio_to_slowest_engine": wall / slowest,
        "ratio_to_slowest_work": wall / slowest_work,
        "engine_rounds": engines,
        "pipeline_rounds": runs,
    }


def markdown_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| resolution | prompts x images | image engine alone, load + work (s) | judges alone, "
        "load + work (s) | `agfsync generate`, wall (s) | wall / slowest engine | "
        "wall / its work alone |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results:
        rounds = row["engine_rounds"]
        lines.append(
            f"| {row['resolution']} px | {row['prompts']} x {row['images'] // row['prompts']} "
            f"| {best(rounds, 'image_load_s'):.1f} + {best(rounds, 'image_work_s'):.1f} "
            f"| {best(rounds, 'judge_load_s'):.1f} + {best(rounds, 'judge_work_s'):.1f} "
            f"| {row['pipeline_wall_s']:.1f} | **{row['ratio_to_slowest_engine']:.3f}** "
            f"| {row['ratio_to_slowest_work']:.3f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", default="256", help="Comma-separated pixel sizes.")
    parser.add_argument(
        "--prompts", default="8", help="Prompts per resolution (one value, or one per entry)."
    )
    parser.add_argument("--rounds", type=int, default=1, help="Alternating rounds; best kept.")
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    resolutions = [int(value) for value in args.resolutions.split(",")]
    counts = [int(value) for value in args.prompts.split(",")]
    counts = counts * len(resolutions) if len(counts) == 1 else counts
    results = []
    with tempfile.TemporaryDirectory(prefix="agfsync-overhead-") as work:
        work_dir = Path(work)
        for resolution, count in zip(resolutions, counts, strict=True):
            prompt_file = write_scaled_prompts(work_dir / f"prompts-{count}.jsonl", count)
            engines, runs = [], []
            for round_ in range(args.rounds):
                engines.append(engines_alone(prompt_file, resolution))
                print(f"{resolution} px round {round_ + 1}: engines {engines[-1]}", flush=True)
                runs.append(pipeline_run(prompt_file, resolution, work_dir))
                print(f"{resolution} px round {round_ + 1}: pipeline {runs[-1]}", flush=True)
            results.append(summarize(resolution, count, engines, runs))
    print(markdown_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
