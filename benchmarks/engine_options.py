"""What each engine option of the image step gains, on one machine, in one run.

Each option is a field of `agfsync.generation.EngineConfig` (and so of the image step):
  baseline          the presets' defaults
  channels_last     UNet and VAE in channels_last memory format
  fuse_qkv          fused attention query/key/value projections
  compile           torch.compile of the UNet (the first batch pays the compilation;
                    it is the warm-up here, so the figure is the steady state)
  vae_fp16          (SDXL in fp16) a VAE without `force_upcast`, as
                    `madebyollin/sdxl-vae-fp16-fix` is, instead of the float32 upcast
  fast_sampling     `--sampling fast`: DPM-Solver++ at 20 steps instead of the
                    baseline's steps (the gain is per image, at equal batch size)
For each, the model is loaded anew with that option alone, warmed up with one call of
the batch size (with `--rounds`, the options take turns, each round loading anew, and
each option's best round is reported), then `--num-prompts` x `--num-images` images
are rendered in batches of `--batch-size`; reported: seconds, images/s and images/s
over the baseline's.

Models are the full-size architectures of `benchmarks/image_generation.py` with random
weights (speed is the architecture's, not the weights'). Meant for a GPU; on a CPU use
a small `--resolution` and few `--steps` (torch.compile needs a C++ compiler there and
is skipped unless `--options` names it).

    python benchmarks/engine_options.py --architecture sd15 --json options.json      # GPU
    python benchmarks/engine_options.py --architecture sdxl --json options-xl.json   # GPU
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import diffusers
import torch
import transformers
from image_generation import DEFAULT_STEPS, FULL_SIZE_BUILDERS, benchmark_prompts, time_batch_size
from machine import machine_settings

from agfsync.generation import CandidateImageGenerator, EngineConfig, GenerationConfig
from agfsync.models import resolve_device, resolve_dtype
from agfsync.sampling import SAMPLING_PRESETS

OPTIONS = ("baseline", "channels_last", "fuse_qkv", "compile", "vae_fp16", "fast_sampling")


def engine_and_sampling(
    option: str, engine: EngineConfig, config: GenerationConfig, vae_folder: Path | None
) -> tuple[EngineConfig, GenerationConfig]:
    """The engine and sampling settings of one option (everything else as the baseline)."""
    if option == "channels_last":
        return engine.model_copy(update={"channels_last": True}), config
    if option == "fuse_qkv":
        return engine.model_copy(update={"fuse_qkv": True}), config
    if option == "compile":
        return engine.model_copy(update={"compile_denoiser": True}), config
    if option == "vae_fp16":
        return engine.model_copy(update={"vae": str(vae_folder)}), config
    if option == "fast_sampling":
        fast = SAMPLING_PRESETS["fast"]
        return (
            engine.model_copy(update={"scheduler": fast["scheduler"]}),
            config.model_copy(update={"num_inference_steps": fast["num_inference_steps"]}),
        )
    return engine, config


def fp16_safe_vae(model: Path, folder: Path) -> Path:
    """The model's VAE saved with `force_upcast` off, as the fp16-fix VAE ships."""
    vae: Any = diffusers.AutoencoderKL.from_pretrained(model / "vae")
    vae.register_to_config(force_upcast=False)
    vae.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", choices=("sd15", "sdxl"), default="sd15")
    parser.add_argument("--options", default=None, help=f"comma-separated of {OPTIONS}")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--num-prompts", type=int, default=4)
    parser.add_argument("--num-images", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=None, help="default: 50")
    parser.add_argument("--resolution", type=int, default=None, help="default: the model's")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--rounds", type=int, default=1, help="Interleaved rounds; each option's best is kept."
    )
    args = parser.parse_args()
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    options = (
        args.options.split(",")
        if args.options
        else [
            option
            for option in OPTIONS
            if not (option == "compile" and device.type != "cuda")
            and not (
                option == "vae_fp16" and (args.architecture != "sdxl" or dtype != torch.float16)
            )
        ]
    )
    steps = args.steps or DEFAULT_STEPS[args.architecture]
    prompt_ids, prompts = benchmark_prompts(args.num_prompts)
    with tempfile.TemporaryDirectory(prefix="agfsync-options-") as scratch:
        model = args.model_dir or Path(scratch) / args.architecture
        if not (model / "model_index.json").exists():
            # Random initialisation of a full-size model takes seconds on a GPU.
            with torch.device(device):
                FULL_SIZE_BUILDERS[args.architecture](model, dtype)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        vae_folder = fp16_safe_vae(model, Path(scratch) / "vae") if "vae_fp16" in options else None
        base_engine = EngineConfig(device=str(device), dtype=args.dtype)
        base_config = GenerationConfig(
            num_images=args.num_images,
            num_inference_steps=steps,
            height=args.resolution,
            width=args.resolution,
        )
        rounds: dict[str, list[dict[str, Any]]] = {option: [] for option in options}
        for round_index in range(args.rounds):
            for option in options:
                engine, config = engine_and_sampling(option, base_engine, base_config, vae_folder)
                generator = CandidateImageGenerator(str(model), engine)
                generator.load()
                row = time_batch_size(generator, prompts, prompt_ids, config, args.batch_size)
                row = {"option": option, "round": round_index + 1, **row}
                rounds[option].append({"steps": config.num_inference_steps, **row})
                print(json.dumps(rounds[option][-1]), flush=True)
                del generator
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        # The best round of each option: on a shared machine the others carry its noise.
        results = [
            {
                **max(timed, key=lambda row: row["images_per_second"]),
                "rounds": [row["images_per_second"] for row in timed],
            }
            for timed in rounds.values()
        ]
    baseline = next((row for row in results if row["option"] == "baseline"), results[0])
    for row in results:
        row["speedup"] = row["images_per_second"] / baseline["images_per_second"]
    payload = {
        "settings": {
            **vars(args),
            "model_dir": None,
            "json": None,
            "steps": steps,
            **machine_settings(device, dtype),
        },
        "results": results,
    }
    print("| option | steps | images/s (best) | every round | vs baseline |")
    print("|---|---:|---:|---|---:|")
    for row in results:
        every = ", ".join(f"{value:.3f}" for value in row["rounds"])
        print(
            f"| {row['option']} | {row['steps']} | {row['images_per_second']:.3f} | {every} "
            f"| {row['speedup']:.2f}x |"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - started:.0f} s")
