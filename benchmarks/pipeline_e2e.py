"""The whole AGFSync pipeline on one GPU: images/s, judged pairs/s, peak GPU memory.

What it runs: the distilabel pipeline of the full presets (`local-llm` wiring:
categories -> LLM prompts -> near-duplicate filter -> LLM QA decomposition ->
`CandidateImageGeneration` -> `ImageJudging` -> `PreferencePairSelection`), with
  - both LLM stages answered by a loopback OpenAI-compatible server started inside
    this script (scripted JSON: unique prompts of about 25 words, 9 valid yes/no
    questions per prompt, the paper's 9.03), reached through distilabel's real
    `OpenAILLM` client;
  - the near-duplicate filter in its model-free MinHash mode (the paper's BGE
    embedding model is not built here);
  - full-size architectures with random weights, built offline into `--model-dir`:
    Stable Diffusion 1.5 (UNet 860M, 512 px), BLIP-2 flan-t5-xl (VQA, `probability`
    mode, feature reuse, batches of 64 pairs), CLIP ViT-B/16 (CLIP score) and CLIP
    ViT-L/14 with the shipped LAION aesthetic head.
The image and judging steps are subclassed only to log, from inside distilabel's
step processes, the time of every batch (the engine's calls vs. the rest of the step:
waiting on its image writer threads, each judge vs. reading images) and
`torch.cuda.max_memory_allocated`; a thread of this driver polls `nvidia-smi` for the
whole GPU's memory in use. Images are random-weight noise:
the throughput is that of the real architectures, the scores mean nothing.

Generation runs at `--steps` denoising steps (the paper says 50; fewer fit a shorter
device lease); afterwards a calibration in a fresh process times the same engine
alone on `--calibration-images` images at `--steps`, at 50 steps and at the `--sampling
fast` setting (DPM-Solver++, 20 steps). The projection scales the engine time measured
in the pipeline by those ratios (the rest of the step's time kept as measured), and the
pipeline's images/s is compared with the engine alone's at `--steps`.

Projection: the paper's 45,834 prompts x 8 images = 366,672 images and 414,172
questions x 8 = 3,313,376 judged (image, question) pairs, on 1 GPU and 8 GPUs
(ideal split), next to the paper's 6 h (SD 1.x images) and 7 h (VQA) + 44 min
(CLIP + aesthetic) on 8 A100.

`--mode standalone` (fallback) runs the same steps one after another in this
process, without distilabel's multiprocess runner.

Examples (results in benchmarks/RESULTS.md, "End to end on one GPU"):
    python benchmarks/pipeline_e2e.py --model-dir /tmp/m --json e2e.json     # GPU
    python benchmarks/pipeline_e2e.py --tiny --prompts-per-category 2        # CPU check
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distilabel.pipeline import Pipeline
from distilabel.steps import StepInput

from agfsync.pipelines.text import add_text_steps, openai_llm
from agfsync.scoring import WEIGHT_PRESETS, ScorerSpec
from agfsync.steps import CandidateImageGeneration, ImageJudging, PreferencePairSelection
from agfsync.steps.qa_decomposition import QA_RESPONSE_SCHEMA
from agfsync.testing.openai_server import ScriptedChatCompletions

if TYPE_CHECKING:
    from distilabel.typing import StepOutput

PAPER_PROMPTS = 45_834
PAPER_QUESTIONS = 414_172
PAPER_IMAGES_PER_PROMPT = 8
PAPER_IMAGES = PAPER_PROMPTS * PAPER_IMAGES_PER_PROMPT
PAPER_PAIRS = PAPER_QUESTIONS * PAPER_IMAGES_PER_PROMPT
PAPER_HOURS_8_A100 = {"generation (SD 1.x)": 6.0, "VQA": 7.0, "CLIP + aesthetic": 44 / 60}
"""AGFSync paper, costs on 8 A100 (see shared/REFERENCE.md)."""

PAPER_STEPS = 50
EVENTS_ENV = "AGFSYNC_E2E_EVENTS"
TINY_MODELS = {
    "sd15": "tiny:stable-diffusion",
    "vqa": "tiny:blip2",
    "clip": "tiny:clip",
    "aesthetic": "tiny:clip-vit-large",
}

# ---------------------------------------------------------------------------
# Scripted LLM output: unique prompts and their yes/no questions.
# ---------------------------------------------------------------------------

SUBJECTS = [
    "fox", "heron", "tortoise", "otter", "lynx", "camel", "lighthouse", "teapot",
    "bicycle", "violin", "robot", "tram", "sunflower", "windmill", "sailboat",
    "typewriter", "owl", "cactus", "lantern", "armchair", "dragonfly", "locomotive",
    "pumpkin", "telescope", "giraffe", "kettle", "piano", "accordion", "peacock",
]  # fmt: skip
OBJECTS = [
    "candles", "books", "apples", "umbrellas", "chairs", "bottles", "kites", "lamps",
    "shells", "clocks", "mugs", "feathers", "pebbles", "keys", "drums", "ribbons",
    "boats", "cups", "hats", "leaves", "stars", "bells", "boxes",
]  # fmt: skip
COLORS = [
    "red", "green", "blue", "golden", "purple", "orange", "silver", "white", "black",
    "pink", "turquoise",
]  # fmt: skip
MATERIALS = ["wood", "glass", "copper", "paper", "marble", "wool", "porcelain"]
POSITIONS = ["beside", "under", "behind", "in front of"]
COUNTS = ["two", "three", "four"]
PLACES = [
    "a snowy forest", "a busy market", "a quiet library", "a desert canyon",
    "a rainy street", "a mountain lake", "an old train station", "a sunlit kitchen",
    "a coral reef", "a wheat field", "a rooftop garden", "a foggy harbor", "a neon arcade",
]  # fmt: skip
LIGHTS = [
    "at golden hour", "in soft morning light", "under a full moon",
    "in dramatic studio light", "on a misty evening",
]  # fmt: skip
STYLES = [
    "a highly detailed photograph", "an oil painting with visible brush strokes",
    "a watercolor illustration", "a cinematic wide shot", "a children's book drawing",
    "a vintage postcard",
]  # fmt: skip


def scene(index: int) -> tuple[str, list[dict[str, Any]]]:
    """Prompt `index` (unique for index < 29 * 23) and its 9 valid QA items."""
    subject = SUBJECTS[index % len(SUBJECTS)]
    objects = OBJECTS[(7 * index) % len(OBJECTS)]
    color = COLORS[(3 * index) % len(COLORS)]
    color2 = COLORS[(3 * index + 5) % len(COLORS)]
    material = MATERIALS[(5 * index) % len(MATERIALS)]
    position = POSITIONS[index % len(POSITIONS)]
    count = COUNTS[index % len(COUNTS)]
    place = PLACES[(11 * index) % len(PLACES)]
    light = LIGHTS[(2 * index) % len(LIGHTS)]
    style = STYLES[index % len(STYLES)]
    prompt = (
        f"{style} of a {color} {subject} made of {material} standing {position} "
        f"{count} {color2} {objects} in {place}, {light}"
    )
    items = [
        (f"Is there a {subject}?", "object", subject),
        (f"Is the {subject} {color}?", "color", color),
        (f"Is the {subject} made of {material}?", "material", material),
        (f"Are there {objects}?", "object", objects),
        (f"Are the {objects} {color2}?", "color", color2),
        (f"Are there {count} {objects}?", "counting", f"{count} {color2} {objects}"),
        (f"Is the {subject} {position} the {objects}?", "spatial", position),
        (f"Is the scene set in {place}?", "location", place),
        (f"Is the picture lit {light}?", "attribute", light),
    ]
    qa = [
        {"question": q, "answer": "yes", "element_type": kind, "element": element, "flag": 1}
        for q, kind, element in items
    ]
    return prompt, qa


def question_texts() -> list[str]:
    """Every question the loopback server can ask, for the benchmark T5 tokenizer."""
    return [
        item["question"]
        for index in range(len(SUBJECTS) * len(OBJECTS))
        for item in scene(index)[1]
    ]


class LoopbackLLM:
    """Answers of the loopback OpenAI-compatible server (`agfsync.testing.openai_server`):
    new prompts for the prompt writer, each prompt's questions for the QA decomposition."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.next_index = 0
        self.questions: dict[str, list[dict[str, Any]]] = {}
        self.requests = {"prompts": 0, "qa": 0}
        self.first_request: float | None = None
        self.last_request: float | None = None
        self.server = ScriptedChatCompletions([self.reply], usage=self.tokens)

    def reply(self, body: dict[str, Any]) -> str:
        system = str(body["messages"][0]["content"])
        user = str(body["messages"][-1]["content"])
        with self.lock:
            now = time.time()
            self.first_request = self.first_request or now
            self.last_request = now
            if "text-to-image model" in system:
                self.requests["prompts"] += 1
                match = re.search(r"Write (\d+) new prompts", user)
                wanted = int(match.group(1)) if match else 10
                prompts = []
                for _ in range(wanted):
                    prompt, qa = scene(self.next_index)
                    self.next_index += 1
                    self.questions[prompt] = qa
                    prompts.append(prompt)
                return json.dumps({"prompts": prompts})
            self.requests["qa"] += 1
            prompt = user.removeprefix("Description: ").strip()
            fallback = scene(0)[1]
            return json.dumps({"questions": self.questions.get(prompt, fallback)})

    @staticmethod
    def tokens(body: dict[str, Any], texts: list[str]) -> tuple[int, int]:
        """About four characters per token, as OpenAI's guidance has it."""
        return len(json.dumps(body["messages"])) // 4, sum(len(text) // 4 for text in texts)

    def start(self) -> str:
        return self.server.serve()

    def stop(self) -> None:
        self.server.stop()


# ---------------------------------------------------------------------------
# Steps that log their timings and GPU memory from inside the step processes.
# ---------------------------------------------------------------------------

ENGINE_SECONDS: dict[str, float] = {}
"""Seconds this process spent in the image engine / in each judge, by name."""


def record_event(event: dict[str, Any]) -> None:
    path = os.environ.get(EVENTS_ENV)
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps(event) + "\n")


def gpu_memory() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {"max_allocated_gib": None, "max_reserved_gib": None}
    return {
        "max_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
        "max_reserved_gib": torch.cuda.max_memory_reserved() / 2**30,
    }


def timed_iterator(key: str, inner: Iterator[Any]) -> Iterator[Any]:
    """`inner`, adding the time spent producing its items to `ENGINE_SECONDS[key]`."""
    while True:
        start = time.perf_counter()
        try:
            item = next(inner)
        except StopIteration:
            ENGINE_SECONDS[key] = ENGINE_SECONDS.get(key, 0.0) + time.perf_counter() - start
            return
        ENGINE_SECONDS[key] = ENGINE_SECONDS.get(key, 0.0) + time.perf_counter() - start
        yield item


def timed_call(key: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            ENGINE_SECONDS[key] = ENGINE_SECONDS.get(key, 0.0) + time.perf_counter() - start

    return wrapper


class TimedCandidateImageGeneration(CandidateImageGeneration):
    """`CandidateImageGeneration`, logging load and batch times and GPU memory."""

    def load(self) -> None:
        start = time.time()
        super().load()
        generator = self._generator
        if generator is not None:  # time the engine's calls; the writer threads are not
            render = generator.generate
            setattr(  # noqa: B010
                generator,
                "generate",
                lambda *args, **kwargs: timed_iterator("engine", render(*args, **kwargs)),
            )
        record_event({"step": "generate", "event": "load", "start": start, "end": time.time()})

    def process(self, inputs: StepInput) -> "StepOutput":
        ENGINE_SECONDS.clear()
        start = time.time()
        outputs = list(super().process(inputs))
        record_event(
            {
                "step": "generate",
                "event": "batch",
                "start": start,
                "end": time.time(),
                "rows": len(inputs),
                "images": sum(len(row["image_paths"]) for row in inputs),
                "engine_seconds": ENGINE_SECONDS.get("engine", 0.0),
                "pid": os.getpid(),
                **gpu_memory(),
            }
        )
        yield from outputs


class TimedImageJudging(ImageJudging):
    """`ImageJudging`, logging load and batch times (per judge) and GPU memory."""

    def load(self) -> None:
        start = time.time()
        super().load()
        for name, judge in self._judges.items():
            setattr(judge, "_score", timed_call(name, judge._score))  # noqa: B010
        record_event({"step": "judge", "event": "load", "start": start, "end": time.time()})

    def process(self, inputs: StepInput) -> "StepOutput":
        ENGINE_SECONDS.clear()
        start = time.time()
        outputs = list(super().process(inputs))
        valid = [
            sum(1 for pair in row.get("qa_pairs") or [] if pair.get("valid", True))
            for row in inputs
        ]
        record_event(
            {
                "step": "judge",
                "event": "batch",
                "start": start,
                "end": time.time(),
                "rows": len(inputs),
                "images": sum(len(row["image_paths"]) for row in inputs),
                "pairs": sum(
                    count * len(row["image_paths"])
                    for count, row in zip(valid, inputs, strict=True)
                ),
                "judge_seconds": dict(ENGINE_SECONDS),
                "pid": os.getpid(),
                **gpu_memory(),
            }
        )
        yield from outputs


class TimedPreferencePairSelection(PreferencePairSelection):
    def process(self, inputs: StepInput) -> "StepOutput":
        start = time.time()
        outputs = list(super().process(inputs))
        record_event(
            {
                "step": "select",
                "event": "batch",
                "start": start,
                "end": time.time(),
                "rows": len(inputs),
            }
        )
        yield from outputs


# ---------------------------------------------------------------------------
# Models: full-size architectures with random weights, built in a child process.
# ---------------------------------------------------------------------------


def build_clip(
    directory: Path,
    dtype: Any,
    *,
    text: tuple[int, int, int, int],
    vision: tuple[int, int, int, int, int],
    projection_dim: int,
    seed: int,
) -> Path:
    """A CLIP with the given (hidden, layers, heads, MLP) text and (hidden, layers,
    heads, MLP, patch) vision towers at 224 px, random weights, CLIP preprocessing;
    the character-level test tokenizer (prompts are cut at 77 tokens either way)."""
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPVisionConfig,
    )

    from agfsync.tiny_models import clip_text_config, tiny_clip_tokenizer

    tokenizer = tiny_clip_tokenizer()
    text_config = clip_text_config(
        tokenizer,
        projection_dim,
        hidden_size=text[0],
        num_hidden_layers=text[1],
        num_attention_heads=text[2],
        intermediate_size=text[3],
        hidden_act="quick_gelu",
    )
    vision_config = CLIPVisionConfig(
        hidden_size=vision[0],
        num_hidden_layers=vision[1],
        num_attention_heads=vision[2],
        intermediate_size=vision[3],
        patch_size=vision[4],
        image_size=224,
        projection_dim=projection_dim,
        hidden_act="quick_gelu",
    )
    config = CLIPConfig(
        text_config=text_config.to_dict(),
        vision_config=vision_config.to_dict(),
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    model: Any = CLIPModel(config)
    model.to(dtype=dtype)
    model.save_pretrained(directory)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


def build_models(model_dir: Path) -> dict[str, Any]:
    """Build the four models (skipping those already there), on the GPU when there is
    one (random initialisation there takes seconds), saved in float16 on a GPU."""
    import torch

    from agfsync.scoring.vqa import VQA_PROMPT
    from agfsync.tiny_models import build_blip2, build_stable_diffusion, tiny_t5_tokenizer

    cuda = torch.cuda.is_available()
    dtype = torch.float16 if cuda else torch.float32
    builders: dict[str, Callable[[Path], Path]] = {
        "sd15": lambda path: build_stable_diffusion(path, size="full", dtype=dtype),
        "vqa": lambda path: build_blip2(
            path,
            size="flan-t5-xl",
            dtype=dtype,
            tokenizer=tiny_t5_tokenizer([VQA_PROMPT, *question_texts()], max_length=512),
        ),
        # openai/clip-vit-base-patch16
        "clip": lambda path: build_clip(
            path,
            dtype,
            text=(512, 12, 8, 2048),
            vision=(768, 12, 12, 3072, 16),
            projection_dim=512,
            seed=1,
        ),
        # openai/clip-vit-large-patch14 (the LAION aesthetic head reads its 768-wide embedding)
        "aesthetic": lambda path: build_clip(
            path,
            dtype,
            text=(768, 12, 12, 3072),
            vision=(1024, 24, 16, 4096, 14),
            projection_dim=768,
            seed=2,
        ),
    }
    seconds: dict[str, Any] = {}
    for name, builder in builders.items():
        target = model_dir / name
        if (target / "config.json").exists() or (target / "model_index.json").exists():
            continue
        start = time.perf_counter()
        staging = model_dir / f".{name}-partial"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            with torch.device("cuda" if cuda else "cpu"):
                builder(staging)
        except Exception as error:  # a builder that cannot initialise on the GPU
            if not cuda:
                raise
            print(f"building {name} on the GPU failed ({error!r}); building on the CPU")
            shutil.rmtree(staging, ignore_errors=True)
            builder(staging)
        staging.rename(target)
        if cuda:
            torch.cuda.empty_cache()
        seconds[name] = time.perf_counter() - start
        print(f"built {name} in {seconds[name]:.1f} s", flush=True)
    parameters = {}
    for name in builders:
        from safetensors import safe_open

        total = 0
        for path in (model_dir / name).rglob("*.safetensors"):
            with safe_open(str(path), "pt") as handle:
                for key in handle.keys():  # noqa: SIM118
                    total += _numel(handle.get_slice(key).get_shape())
        parameters[name] = total
    return {"build_seconds": seconds, "parameters": parameters}


def _numel(shape: list[int]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def calibrate(
    model: str,
    steps_list: list[int],
    images: int,
    batch_size: int,
    resolution: int | None,
    compile_denoiser: bool = False,
) -> dict[str, Any]:
    """Seconds per image of the image engine alone at each step count, and at the
    `--sampling fast` setting (same batch size, the model loaded anew for it)."""
    import gc

    import torch

    from agfsync.generation import (
        CandidateImageGenerator,
        EngineConfig,
        GenerationConfig,
        plan_jobs,
    )
    from agfsync.sampling import SAMPLING_PRESETS

    count = max(1, -(-images // PAPER_IMAGES_PER_PROMPT))
    prompts = [scene(index)[0] for index in range(count)]
    prompt_ids = [f"calibration-{index}" for index in range(count)]
    fast = SAMPLING_PRESETS["fast"]
    settings = [(str(steps), None, steps) for steps in steps_list]
    settings.append(("fast", fast["scheduler"], fast["num_inference_steps"]))
    per_image: dict[str, float] = {}
    for key, scheduler, steps in settings:
        engine = EngineConfig(
            batch_size=batch_size, scheduler=scheduler, compile_denoiser=compile_denoiser
        )
        generator = CandidateImageGenerator(model, engine)
        generator.load()
        config = GenerationConfig(
            num_images=PAPER_IMAGES_PER_PROMPT,
            num_inference_steps=steps,
            height=resolution,
            width=resolution,
        )
        jobs = plan_jobs(prompt_ids, config)[:images]
        warm_up = config.model_copy(update={"num_inference_steps": 2})
        for _ in generator.generate(prompts, jobs[:batch_size], warm_up):
            pass
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        done = sum(1 for _ in generator.generate(prompts, jobs, config))
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        per_image[key] = (time.perf_counter() - start) / done
        print(f"calibration: {key} ({steps} steps), {per_image[key]:.4f} s per image", flush=True)
        del generator
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return {
        "images": images,
        "batch_size": batch_size,
        "fast": {"scheduler": fast["scheduler"], "steps": fast["num_inference_steps"]},
        "seconds_per_image": per_image,
    }


# ---------------------------------------------------------------------------
# The pipeline and how it is run.
# ---------------------------------------------------------------------------


def build_pipeline(args: argparse.Namespace, models: dict[str, str], cache_dir: Path) -> Pipeline:
    """The full presets' wiring (`build_full_pipeline`) with the timed steps."""
    weights = WEIGHT_PRESETS["equal"]
    with Pipeline(
        name="agfsync-e2e-benchmark",
        description="AGFSync end to end on random full-size models, loopback LLM.",
        cache_dir=cache_dir,
    ) as pipeline:
        decompose = add_text_steps(openai_llm("qa_pairs", QA_RESPONSE_SCHEMA))
        generate = TimedCandidateImageGeneration(
            name="generate_images",
            model=models["sd15"],
            num_images=args.num_images,
            num_inference_steps=args.steps,
            height=args.resolution,
            width=args.resolution,
            batch_size=args.generation_batch_size,
            compile_denoiser=args.compile_denoiser,
            image_writer_threads=args.image_writer_threads,
            input_batch_size=8,
        )
        judge = TimedImageJudging(
            name="judge_images",
            scorers=[
                ScorerSpec(
                    name="vqa",
                    model=models["vqa"],
                    weight=weights["vqa"],
                    batch_size=args.vqa_batch_size,
                    options={"mode": "probability"},
                ),
                ScorerSpec(name="clip", model=models["clip"], weight=weights["clip"]),
                ScorerSpec(
                    name="aesthetic", model=models["aesthetic"], weight=weights["aesthetic"]
                ),
            ],
            input_batch_size=8,
        )
        select = TimedPreferencePairSelection(name="select_pairs", input_batch_size=8)
        decompose >> generate >> judge >> select
    return pipeline


def run_parameters(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    return {
        "load_categories": {"prompts_per_category": args.prompts_per_category},
        "write_prompts": {"prompts_per_call": args.prompts_per_category},
        "deduplicate_prompts": {"method": "minhash"},
    }


def run_standalone(
    pipeline: Pipeline, parameters: dict[str, dict[str, Any]], artifacts: Path
) -> list[dict[str, Any]]:
    """The steps one after another in this process, without distilabel's runner."""
    import networkx as nx

    rows: list[dict[str, Any]] = []
    for name in nx.topological_sort(pipeline.dag.G):
        step: Any = pipeline.dag.get_step(name)["step"]
        step.set_runtime_parameters(parameters.get(name, {}))
        step.set_pipeline_artifacts_path(artifacts)
        step.load()
        if step.is_generator:
            rows = [row for batch, _last in step.process() for row in batch]
        elif step.is_global:
            rows = [row for batch in step.process(rows) for row in batch]
        else:
            done: list[dict[str, Any]] = []
            for start in range(0, len(rows), step.input_batch_size):
                for batch in step.process(rows[start : start + step.input_batch_size]):
                    done += batch
            rows = done
        step.unload()
        print(f"standalone: {name} -> {len(rows)} rows", flush=True)
    return rows


class GPUMemoryPoller:
    """Polls `nvidia-smi` (memory in use on the whole GPU, every process) every 0.5 s."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        if shutil.which("nvidia-smi") is None:
            return
        self.process = subprocess.Popen(
            [
                "nvidia-smi",
                "--query-gpu=memory.used",
                "--format=csv,noheader,nounits",
                "-lms",
                "500",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self.samples.append(float(line.strip().split()[0]) / 1024)
            except (ValueError, IndexError):
                continue

    def stop(self) -> dict[str, Any]:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
        return {
            "nvidia_smi_max_used_gib": max(self.samples) if self.samples else None,
            "nvidia_smi_samples": len(self.samples),
        }


# ---------------------------------------------------------------------------
# Results.
# ---------------------------------------------------------------------------


def stage(events: list[dict[str, Any]], step: str) -> dict[str, Any]:
    batches = [event for event in events if event["step"] == step and event["event"] == "batch"]
    loads = [event for event in events if event["step"] == step and event["event"] == "load"]
    if not batches:
        return {"batches": 0}
    allocated = [e["max_allocated_gib"] for e in batches if e.get("max_allocated_gib") is not None]
    reserved = [e["max_reserved_gib"] for e in batches if e.get("max_reserved_gib") is not None]
    return {
        "batches": len(batches),
        "first_start": min(event["start"] for event in batches),
        "last_end": max(event["end"] for event in batches),
        "span_seconds": max(e["end"] for e in batches) - min(e["start"] for e in batches),
        "busy_seconds": sum(event["end"] - event["start"] for event in batches),
        "load_seconds": sum(event["end"] - event["start"] for event in loads),
        "rows": sum(event["rows"] for event in batches),
        "images": sum(event.get("images", 0) for event in batches),
        "max_allocated_gib": max(allocated) if allocated else None,
        "max_reserved_gib": max(reserved) if reserved else None,
    }


def summarize(
    events: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    calibration: dict[str, Any] | None,
    steps: int,
) -> dict[str, Any]:
    generate, judge, select = (
        stage(events, "generate"),
        stage(events, "judge"),
        stage(events, "select"),
    )
    gen_batches = [e for e in events if e["step"] == "generate" and e["event"] == "batch"]
    judge_batches = [e for e in events if e["step"] == "judge" and e["event"] == "batch"]
    generate["engine_seconds"] = sum(event["engine_seconds"] for event in gen_batches)
    generate["write_seconds"] = generate["busy_seconds"] - generate["engine_seconds"]
    judges: dict[str, float] = {}
    for event in judge_batches:
        for name, seconds in event["judge_seconds"].items():
            judges[name] = judges.get(name, 0.0) + seconds
    judge["judge_seconds"] = judges
    judge["read_seconds"] = judge["busy_seconds"] - sum(judges.values())
    judge["pairs"] = sum(event["pairs"] for event in judge_batches)
    images, pairs = generate["images"], judge["pairs"]
    generate["images_per_second_span"] = images / generate["span_seconds"]
    generate["images_per_second_busy"] = images / generate["busy_seconds"]
    generate["images_per_second_engine"] = images / generate["engine_seconds"]
    if len(gen_batches) > 1:  # without the first batch (warm-up, torch.compile's compilation)
        first = min(gen_batches, key=lambda event: event["start"])
        generate["images_per_second_after_first_batch"] = (images - first["images"]) / (
            generate["last_end"] - first["end"]
        )
    judge["pairs_per_second_busy"] = pairs / judge["busy_seconds"]
    judge["pairs_per_second_span"] = pairs / judge["span_seconds"]
    judge["vqa_pairs_per_second"] = pairs / judges["vqa"]
    judge["images_per_second_busy"] = judge["images"] / judge["busy_seconds"]

    # Projection to the paper's run at 50 steps, and at the fast sampling setting.
    fast_scale = None
    if calibration is not None:
        measured = calibration["seconds_per_image"]
        scale = measured[str(PAPER_STEPS)] / measured[str(steps)]
        scale_source = f"calibrated: engine alone at {PAPER_STEPS} vs {steps} steps"
        fast_scale = measured["fast"] / measured[str(steps)]
        generate["engine_alone_images_per_second"] = 1 / measured[str(steps)]
        generate["pipeline_vs_engine_alone"] = (
            generate["images_per_second_span"] / generate["engine_alone_images_per_second"]
        )
    else:
        scale = PAPER_STEPS / steps
        scale_source = f"assumed: {PAPER_STEPS}/{steps} (engine time proportional to steps)"
    engine_per_image = generate["engine_seconds"] / images
    write_per_image = generate["write_seconds"] / images
    vqa_per_pair = judges["vqa"] / pairs
    other_per_image = (judge["busy_seconds"] - judges["vqa"]) / judge["images"]
    vqa_hours = PAPER_PAIRS * vqa_per_pair / 3600
    other_hours = PAPER_IMAGES * other_per_image / 3600

    def per_image(step_scale: float) -> float:
        """Generation's seconds per image, its engine time scaled, the rest as measured."""
        return engine_per_image * step_scale + write_per_image

    def hours(step_scale: float) -> dict[str, float]:
        """Hours of each stage on one GPU at that engine scale."""
        generation = PAPER_IMAGES * per_image(step_scale) / 3600
        return {
            "generation": generation,
            "VQA": vqa_hours,
            "CLIP + aesthetic + reading images": other_hours,
            "total (stages one after another)": generation + vqa_hours + other_hours,
            # The pipeline runs both stages at once: the slower one sets the pace.
            "total (overlapped, as the pipeline runs them)": max(
                generation, vqa_hours + other_hours
            ),
        }

    def on_8_gpus(one_gpu: dict[str, float]) -> dict[str, float]:
        return {key: value / 8 for key, value in one_gpu.items()}

    projection: dict[str, Any] = {
        "paper_images": PAPER_IMAGES,
        "paper_pairs": PAPER_PAIRS,
        "step_scale": scale,
        "step_scale_source": scale_source,
        "generation_seconds_per_image_at_50_steps": per_image(scale),
        "hours_1_gpu": hours(scale),
        "hours_8_gpus": on_8_gpus(hours(scale)),
        "paper_hours_8_a100": PAPER_HOURS_8_A100,
    }
    if fast_scale is not None:
        projection["fast_scale"] = fast_scale
        projection["generation_seconds_per_image_fast"] = per_image(fast_scale)
        projection["hours_1_gpu_fast"] = hours(fast_scale)
        projection["hours_8_gpus_fast"] = on_8_gpus(hours(fast_scale))

    qa_counts = [
        sum(1 for pair in row.get("qa_pairs") or [] if pair.get("valid", True)) for row in rows
    ]
    dataset = {
        "rows": len(rows),
        "images": sum(len(row.get("image_paths") or []) for row in rows),
        "pairs_selected": sum(1 for row in rows if row.get("pair_error") is None),
        "questions": sum(qa_counts),
        "questions_per_prompt": sum(qa_counts) / len(rows) if rows else None,
    }
    return {
        "generation": generate,
        "judging": judge,
        "selection": select,
        "dataset": dataset,
        "projection": projection,
    }


def report(result: dict[str, Any]) -> str:
    gen, judge, proj = result["generation"], result["judging"], result["projection"]
    settings, data = result["settings"], result["dataset"]
    judges = judge["judge_seconds"]
    lines = [
        f"{settings['device_name']}: {data['rows']} prompts, {data['images']} images "
        f"({settings['num_images']} per prompt, {settings['steps']} steps, "
        f"{settings['resolution']} px), {data['questions']} questions "
        f"({data['questions_per_prompt']:.2f} per prompt), {judge['pairs']} judged pairs, "
        f"{data['pairs_selected']} preference pairs; mode {settings['mode']}",
        f"pipeline.run: {result['pipeline_seconds']:.1f} s; text stage (loopback) "
        f"{result['text_stage_seconds']:.1f} s",
        "",
        "| stage | load s | first -> last batch s | busy s | throughput | peak GPU alloc GiB |",
        "|---|---:|---:|---:|---|---:|",
        f"| generation | {gen['load_seconds']:.1f} | {gen['span_seconds']:.1f} | "
        f"{gen['busy_seconds']:.1f} (engine {gen['engine_seconds']:.1f}, waiting on the writer "
        f"{gen['write_seconds']:.1f}) | {gen['images_per_second_span']:.2f} images/s "
        f"(engine alone {gen['images_per_second_engine']:.2f}) | "
        f"{_gib(gen['max_allocated_gib'])} |",
        f"| judging | {judge['load_seconds']:.1f} | {judge['span_seconds']:.1f} | "
        f"{judge['busy_seconds']:.1f} (VQA {judges.get('vqa', 0):.1f}, CLIP "
        f"{judges.get('clip', 0):.1f}, aesthetic {judges.get('aesthetic', 0):.1f}, reading "
        f"{judge['read_seconds']:.1f}) | {judge['pairs_per_second_busy']:.1f} pairs/s "
        f"(VQA alone {judge['vqa_pairs_per_second']:.1f}) | "
        f"{_gib(judge['max_allocated_gib'])} |",
        "",
        "whole GPU (nvidia-smi, both step processes): max "
        f"{_gib(result['nvidia_smi_max_used_gib'])} GiB",
        f"projection ({proj['step_scale_source']}, x{proj['step_scale']:.2f}):",
    ]
    if "images_per_second_after_first_batch" in gen:
        lines.insert(
            3,
            "generation after its first batch: "
            f"{gen['images_per_second_after_first_batch']:.2f} images/s",
        )
    if "pipeline_vs_engine_alone" in gen:
        lines.insert(
            3,
            f"pipeline vs engine alone: {gen['images_per_second_span']:.2f} / "
            f"{gen['engine_alone_images_per_second']:.2f} images/s = "
            f"{gen['pipeline_vs_engine_alone']:.3f}",
        )
    for key, hours in proj["hours_1_gpu"].items():
        lines.append(f"  {key}: 1 GPU {hours:.1f} h, 8 GPUs {proj['hours_8_gpus'][key]:.2f} h")
    lines.append(f"  paper on 8 A100: {proj['paper_hours_8_a100']}")
    if "hours_1_gpu_fast" in proj:
        lines.append(f"fast sampling (x{proj['fast_scale']:.2f} of the measured engine time):")
        for key, hours in proj["hours_1_gpu_fast"].items():
            eight = proj["hours_8_gpus_fast"][key]
            lines.append(f"  {key}: 1 GPU {hours:.1f} h, 8 GPUs {eight:.2f} h")
    return "\n".join(lines)


def _gib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase", choices=["run", "build", "calibrate"], default="run")
    parser.add_argument("--mode", choices=["pipeline", "standalone"], default="pipeline")
    parser.add_argument("--tiny", action="store_true", help="tiny test models (CPU check)")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--prompts-per-category", type=int, default=16, help="12 categories")
    parser.add_argument("--num-images", type=int, default=PAPER_IMAGES_PER_PROMPT)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--generation-batch-size", type=int, default=32)
    parser.add_argument("--vqa-batch-size", type=int, default=64)
    parser.add_argument(
        "--compile-denoiser",
        action="store_true",
        help="torch.compile the UNet, in the pipeline and the calibration alike",
    )
    parser.add_argument("--image-writer-threads", type=int, default=4)
    parser.add_argument("--calibration-images", type=int, default=32)
    parser.add_argument("--skip-calibration-after", type=float, default=None,
                        help="skip the calibration when the run took longer (seconds)")  # fmt: skip
    parser.add_argument("--output", type=Path, default=None, help="(internal) phase result")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.tiny:
        args.resolution = None
    return args


def child(args: argparse.Namespace, phase: str, output: Path, *extra: str) -> dict[str, Any]:
    """Run a phase in a fresh process (the driver must not touch CUDA before the
    pipeline forks its step processes) and read its JSON result."""
    command = [sys.executable, __file__, "--phase", phase, "--output", str(output), *extra]
    subprocess.run(command, check=True)
    return json.loads(output.read_text())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="agfsync-e2e-"))
    work.mkdir(parents=True, exist_ok=True)
    model_dir = args.model_dir or work / "models"
    common = ["--model-dir", str(model_dir), "--steps", str(args.steps)]
    common += ["--generation-batch-size", str(args.generation_batch_size)]
    common += ["--calibration-images", str(args.calibration_images)]
    common += ["--compile-denoiser"] if args.compile_denoiser else []
    common += ["--tiny"] if args.tiny else ["--resolution", str(args.resolution)]
    if args.phase == "build":
        args.output.write_text(json.dumps(build_models(model_dir)))
        return
    models = dict(TINY_MODELS) if args.tiny else {n: str(model_dir / n) for n in TINY_MODELS}
    if args.phase == "calibrate":
        result = calibrate(
            models["sd15"],
            sorted({args.steps, PAPER_STEPS}),
            args.calibration_images,
            args.generation_batch_size,
            args.resolution,
            args.compile_denoiser,
        )
        args.output.write_text(json.dumps(result))
        return

    built: dict[str, Any] = {"build_seconds": {}, "parameters": {}}
    if not args.tiny:
        model_dir.mkdir(parents=True, exist_ok=True)
        built = child(args, "build", work / "build.json", *common)
    events_path = work / "events.jsonl"
    events_path.unlink(missing_ok=True)
    os.environ[EVENTS_ENV] = str(events_path)
    os.environ.setdefault("OPENAI_API_KEY", "sk-loopback")
    llm = LoopbackLLM()
    url = llm.start()
    pipeline = build_pipeline(args, models, work / "distilabel")
    for name in pipeline.dag:
        step_llm = getattr(pipeline.dag.get_step(name)["step"], "llm", None)
        if step_llm is not None:
            step_llm.base_url = url
    parameters = run_parameters(args)
    poller = GPUMemoryPoller()
    poller.start()
    start = time.perf_counter()
    if args.mode == "pipeline":
        distiset = pipeline.run(parameters=parameters, use_cache=False)
        rows = [dict(row) for row in distiset["default"]["train"]]
    else:
        rows = run_standalone(pipeline, parameters, work / "artifacts")
    pipeline_seconds = time.perf_counter() - start
    memory = poller.stop()
    llm.stop()
    events = [json.loads(line) for line in events_path.read_text().splitlines() if line]
    print(f"pipeline finished in {pipeline_seconds:.1f} s with {len(rows)} rows", flush=True)

    calibration = None
    elapsed = time.perf_counter() - started
    if args.skip_calibration_after is None or elapsed < args.skip_calibration_after:
        try:
            calibration = child(args, "calibrate", work / "calibration.json", *common)
        except subprocess.CalledProcessError as error:
            print(f"calibration failed: {error}")
    else:
        print(f"calibration skipped: {elapsed:.0f} s elapsed")

    result = summarize(events, rows, calibration, args.steps)
    import torch
    from machine import device_name

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result.update(
        {
            "settings": {
                "mode": args.mode,
                "tiny": args.tiny,
                "device_name": device_name(device),
                "cpu_count": os.cpu_count(),
                "torch": torch.__version__,
                "num_images": args.num_images,
                "steps": args.steps,
                "resolution": args.resolution,
                "generation_batch_size": args.generation_batch_size,
                "vqa_batch_size": args.vqa_batch_size,
                "compile_denoiser": args.compile_denoiser,
                "image_writer_threads": args.image_writer_threads,
                "prompts_per_category": args.prompts_per_category,
            },
            "models": models,
            "build": built,
            "calibration": calibration,
            "pipeline_seconds": pipeline_seconds,
            "text_stage_seconds": (llm.last_request or 0) - (llm.first_request or 0),
            "llm_requests": llm.requests,
            **memory,
            "total_seconds": time.perf_counter() - started,
        }
    )
    print(report(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
