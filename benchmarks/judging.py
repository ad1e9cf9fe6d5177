"""Throughput of agfsync's VQA judge: batched P(yes) versus one `generate` per question.

What it measures: `VQAScorer.answer` on `--num-images` synthetic images (seeded
random noise, `--image-size` px square) with `--questions-per-image` yes/no
questions each, taken from the shipped sample prompts. One loaded model is timed
in three ways; every mode gets a warm-up call (one full batch), then the three
are timed in turn for `--repeats` rounds and each reports its fastest round:
  1. batched `probability` mode with BLIP-2 image-feature reuse (each image goes
     through the vision tower and Q-Former once, its questions are batched over
     the language model, and P(yes) is read from the first decoding step);
  2. the same without reuse (`reuse_image_features=False`: one full vision +
     language pass per (image, question) pair, still batched);
  3. naive: `mode="answer"` with `batch_size=1`, i.e. one processor call and one
     `generate` per (image, question) pair, as the AGFSync reference code does.
It reports (image, question) pairs per second for each, the ratios 1/3 and 2/3
(also within each round, to show how steady they are) and, on CUDA, the peak GPU
memory of each. As a sanity check it also reports the largest difference between
the P(yes) of modes 1 and 2, which must agree.

The reference code (`dpo_dataset/blip2_vqa.py` of AGFSync) calls
`generate(max_new_tokens=512)`, which a trained BLIP-2 ends after two tokens
("yes"/"no", then end-of-sequence). Random weights emit end-of-sequence only by
chance, so the naive loop is capped at `--max-new-tokens` (default 2) tokens per
pair: the work the trained model does, not 512 steps.

Models have the real architecture and random weights, built offline:
  tiny              the `tiny:blip2` test model (32x32 px; overhead, not speed)
  blip2-flan-t5-xl  full-size `Salesforce/blip2-flan-t5-xl` (ViT-g/14 at 224 px,
                    Q-Former with 32 queries, flan-t5-xl: about 3.9B parameters)
The paper judged with blip2-flan-t5-xxl (about 12B parameters); xl keeps the
benchmark within one GPU's memory in fp16 with room for batches of 64 pairs. The
full-size model uses the character-level test tokenizer of the tiny models,
extended with whole-word pieces for the words of the prompt template and of the
sample questions, so that prompts are about as many tokens long as with the real
SentencePiece vocabulary (the mean is printed); the model's embedding table and
LM head keep flan-T5's real 32,128 entries, of which the tokenizer uses 690.
transformers 5 ties T5's LM head to the embedding table, so 3.88B parameters are
stored instead of the real 3.94B; the computation is the same. It is meant for a
GPU; on a CPU it builds (about 90 s and 16 GB of RAM in float32) and loads, but
runs at well under one pair per second.

Anchor: the AGFSync paper's VQA stage took about 7 hours on 8 A100 GPUs for
45,834 prompts x 8 images x about 9 questions, i.e.
45,834 * 8 * 9 / (7 * 3600 * 8) = about 16 answers/s per GPU.
Target (issue): the batched mode at least 20x the naive loop on a GPU.

Example (GPU, fp16):
    python benchmarks/judging.py --architecture blip2-flan-t5-xl --json vqa.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from machine import machine_settings, synchronize
from PIL import Image

from agfsync.models import resolve_device, resolve_dtype
from agfsync.scoring.vqa import VQA_PROMPT, VQAScorer
from agfsync.text.prompt_files import load_prompt_records
from agfsync.tiny_models import build_blip2, tiny_t5_tokenizer

PAPER_ANSWERS_PER_GPU_SECOND = 45_834 * 8 * 9 / (7 * 3600 * 8)
"""AGFSync paper: 45,834 prompts x 8 images x ~9 questions in about 7 h on 8 A100 GPUs."""

ISSUE_TARGET_RATIO = 20.0
"""Batched over naive pairs/s asked for on a GPU."""

# ---------------------------------------------------------------------------
# Benchmark.
# ---------------------------------------------------------------------------


def benchmark_workload(
    num_images: int, questions_per_image: int, image_size: int, seed: int = 0
) -> tuple[list[Image.Image], list[list[str]]]:
    """Seeded noise images; image i gets the valid questions of sample prompt i (cycled
    through that prompt's questions to `questions_per_image`)."""
    records = load_prompt_records()
    generator = np.random.default_rng(seed)
    images = [
        Image.fromarray(generator.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8))
        for _ in range(num_images)
    ]
    questions = []
    for index in range(num_images):
        pool = [
            pair["question"]
            for pair in records[index % len(records)]["qa_pairs"]
            if pair.get("valid", True)
        ]
        questions.append([pool[i % len(pool)] for i in range(questions_per_image)])
    return images, questions


def sample_question_texts() -> list[str]:
    """The template and every question of the shipped sample prompts."""
    texts = [VQA_PROMPT]
    for record in load_prompt_records():
        texts += [pair["question"] for pair in record["qa_pairs"]]
    return texts


MODES: dict[str, dict[str, Any]] = {
    "batched P(yes), feature reuse": {
        "key": "batched_reuse",
        "mode": "probability",
        "reuse_image_features": True,
    },
    "batched P(yes), no reuse": {
        "key": "batched_no_reuse",
        "mode": "probability",
        "reuse_image_features": False,
    },
    "naive generate per pair": {
        "key": "naive",
        "mode": "answer",
        "reuse_image_features": False,
        "batch_size": 1,
    },
}


def use_mode(scorer: VQAScorer, label: str, batch_size: int) -> None:
    """Switch the loaded scorer to one of `MODES` (the model stays loaded)."""
    spec = MODES[label]
    scorer.mode = spec["mode"]
    scorer.reuse_image_features = spec["reuse_image_features"]
    scorer.batch_size = spec.get("batch_size", batch_size)


def warm_up(scorer: VQAScorer, images: list[Image.Image], questions: list[list[str]]) -> None:
    """One full batch of pairs in the current mode (a single image's questions when
    the batch is smaller than that)."""
    per_image = max(len(qs) for qs in questions)
    count = -(-scorer.batch_size // per_image)
    scorer.answer(images[:count], questions[:count])
    synchronize(scorer.device)


def time_answer(
    scorer: VQAScorer, images: list[Image.Image], questions: list[list[str]]
) -> tuple[float, float | None, list[list[float]]]:
    """Seconds of one `scorer.answer` call, its peak GPU memory (GiB) and the answers."""
    device = scorer.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    answers = scorer.answer(images, questions)
    synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return seconds, peak, answers


def time_modes(
    scorer: VQAScorer,
    images: list[Image.Image],
    questions: list[list[str]],
    batch_size: int,
    repeats: int,
) -> tuple[list[dict[str, Any]], dict[str, list[list[float]]]]:
    """Warm every mode up, then time the modes in turn, `repeats` rounds; each row keeps
    the fastest round (the least disturbed by other work) and all of them."""
    for label in MODES:
        use_mode(scorer, label, batch_size)
        warm_up(scorer, images, questions)
    pairs = sum(len(qs) for qs in questions)
    seconds: dict[str, list[float]] = {label: [] for label in MODES}
    peaks: dict[str, list[float]] = {label: [] for label in MODES}
    answers: dict[str, list[list[float]]] = {}
    for _ in range(repeats):
        for label in MODES:
            use_mode(scorer, label, batch_size)
            elapsed, peak, answers[MODES[label]["key"]] = time_answer(scorer, images, questions)
            seconds[label].append(elapsed)
            if peak is not None:
                peaks[label].append(peak)
    rows = []
    for label in MODES:
        use_mode(scorer, label, batch_size)
        best = min(seconds[label])
        rows.append(
            {
                "mode": label,
                "key": MODES[label]["key"],
                "batch_size": scorer.batch_size,
                "pairs": pairs,
                "seconds": best,
                "pairs_per_second": pairs / best,
                "slowest_pairs_per_second": pairs / max(seconds[label]),
                "all_seconds": seconds[label],
                "peak_gpu_memory_gib": max(peaks[label]) if peaks[label] else None,
            }
        )
    return rows, answers


def markdown_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| mode | batch size | pairs | seconds | pairs/s | slowest round pairs/s "
        "| peak GPU memory (GiB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results:
        peak = row["peak_gpu_memory_gib"]
        lines.append(
            f"| {row['mode']} | {row['batch_size']} | {row['pairs']} | {row['seconds']:.2f} "
            f"| {row['pairs_per_second']:.1f} | {row['slowest_pairs_per_second']:.1f} "
            f"| {'-' if peak is None else f'{peak:.1f}'} |"
        )
    return "\n".join(lines)


def ratio_range(values: list[float]) -> str:
    return f"{min(values):.2f}x-{max(values):.2f}x"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="(image, question) pairs/s of agfsync's VQA judge: batched P(yes) with "
        "and without BLIP-2 image-feature reuse vs one generate per pair, on one loaded model.",
        epilog=f"Paper anchor: about {PAPER_ANSWERS_PER_GPU_SECOND:.0f} answers/s per A100; "
        f"target: batched at least {ISSUE_TARGET_RATIO:.0f}x naive on a GPU.",
    )
    parser.add_argument("--architecture", choices=("tiny", "blip2-flan-t5-xl"), default="tiny")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", default="auto", help="auto (fp16 on CUDA), float32, ...")
    parser.add_argument("--num-images", type=int, default=16)
    parser.add_argument(
        "--questions-per-image", type=int, default=9, help="default 9, the paper's average"
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="pairs per forward pass of the batched modes"
    )
    parser.add_argument(
        "--image-size", type=int, default=512, help="side of the synthetic images in px"
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=2,
        help="tokens the naive loop generates per pair (a trained model: answer + EOS)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed rounds over the three modes; each mode reports its fastest round",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="blip2-flan-t5-xl: build the model here, or reuse it if already there "
        "(default: a temporary folder removed at exit)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)
    for name in ("num_images", "questions_per_image", "batch_size", "image_size", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Quiet the libraries' progress bars and per-call warnings.
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    images, questions = benchmark_workload(
        args.num_images, args.questions_per_image, args.image_size
    )

    with tempfile.TemporaryDirectory(prefix="agfsync-benchmark-") as scratch:
        build_seconds = 0.0
        if args.architecture == "tiny":
            model = "tiny:blip2"
        else:
            folder = args.model_dir or Path(scratch) / args.architecture
            if not (folder / "config.json").exists():
                print(f"Building full-size {args.architecture} with random weights in {folder}")
                start = time.perf_counter()
                tokenizer = tiny_t5_tokenizer(sample_question_texts(), max_length=512)
                build_blip2(folder, size="flan-t5-xl", dtype=dtype, tokenizer=tokenizer)
                build_seconds = time.perf_counter() - start
            model = str(folder)

        start = time.perf_counter()
        scorer = VQAScorer(
            model,
            device=str(device),
            dtype=args.dtype,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
        )
        scorer.load()
        load_seconds = time.perf_counter() - start

    parameters = sum(parameter.numel() for parameter in scorer.vlm.parameters())
    tokenizer = scorer.processor.tokenizer
    prompt_tokens = [
        len(tokenizer(VQA_PROMPT.format(question=question)).input_ids)
        for qs in questions
        for question in qs
    ]
    results, answers = time_modes(scorer, images, questions, args.batch_size, args.repeats)
    by_key = {row["key"]: row for row in results}
    naive = by_key["naive"]["pairs_per_second"]
    ratios = {
        "batched_reuse_vs_naive": by_key["batched_reuse"]["pairs_per_second"] / naive,
        "batched_no_reuse_vs_naive": by_key["batched_no_reuse"]["pairs_per_second"] / naive,
    }
    # The same ratios within each round, to show how steady they were.
    round_ratios = {
        f"{key}_vs_naive": [
            slow / fast
            for fast, slow in zip(
                by_key[key]["all_seconds"], by_key["naive"]["all_seconds"], strict=True
            )
        ]
        for key in ("batched_reuse", "batched_no_reuse")
    }
    reuse_difference = max(
        abs(a - b)
        for reused, plain in zip(answers["batched_reuse"], answers["batched_no_reuse"], strict=True)
        for a, b in zip(reused, plain, strict=True)
    )

    settings = {
        "architecture": args.architecture,
        "model": model if args.architecture == "tiny" else "blip2-flan-t5-xl (random weights)",
        "parameters": parameters,
        **machine_settings(device, dtype),
        "transformers": transformers.__version__,
        "num_images": args.num_images,
        "questions_per_image": args.questions_per_image,
        "image_size": args.image_size,
        "model_image_size": scorer.vlm.config.vision_config.image_size,
        "num_query_tokens": scorer.vlm.config.num_query_tokens,
        "mean_prompt_tokens": sum(prompt_tokens) / len(prompt_tokens),
        "max_new_tokens_naive": args.max_new_tokens,
        "repeats": args.repeats,
        "build_seconds": build_seconds,
        "load_seconds": load_seconds,
    }
    print(
        f"\n{args.architecture} ({parameters / 1e6:.1f}M parameters) on {settings['device']} "
        f"({settings['device_name']}, {settings['cpu_count']} CPUs), {settings['dtype']}; "
        f"{args.num_images} images ({args.image_size} px, model input "
        f"{settings['model_image_size']} px) x {args.questions_per_image} questions; "
        f"{settings['mean_prompt_tokens']:.1f} prompt tokens + "
        f"{settings['num_query_tokens']} image tokens per pair; naive generates "
        f"{args.max_new_tokens} tokens; fastest of {args.repeats} rounds; "
        f"torch {torch.__version__}, transformers "
        f"{transformers.__version__}; build {build_seconds:.1f} s, load {load_seconds:.1f} s\n"
    )
    print(markdown_table(results))
    print(
        f"\nbatched with reuse / naive = {ratios['batched_reuse_vs_naive']:.2f}x pairs/s "
        f"({ratio_range(round_ratios['batched_reuse_vs_naive'])} within single rounds)"
        f"\nbatched without reuse / naive = {ratios['batched_no_reuse_vs_naive']:.2f}x pairs/s "
        f"({ratio_range(round_ratios['batched_no_reuse_vs_naive'])} within single rounds)"
        f"\nmax |P(yes) with reuse - without| = {reuse_difference:.2e}"
    )
    print(
        f"paper anchor: about {PAPER_ANSWERS_PER_GPU_SECOND:.1f} answers/s per A100 "
        f"(blip2-flan-t5-xxl); target: batched >= {ISSUE_TARGET_RATIO:.0f}x naive on a GPU"
    )
    if args.json is not None:
        payload = {
            "settings": settings,
            "results": results,
            "ratios": ratios,
            "round_ratios": round_ratios,
            "max_reuse_probability_difference": reuse_difference,
            "paper_answers_per_gpu_second": PAPER_ANSWERS_PER_GPU_SECOND,
            "target_ratio": ISSUE_TARGET_RATIO,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
