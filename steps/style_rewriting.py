"""The image-preferences prompt scheme: seed prompts rewritten per style and complexity."""

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from distilabel.mixins.runtime_parameters import RuntimeParameter
from distilabel.steps import StepInput
from distilabel.steps.tasks import Task
from pydantic import Field, PrivateAttr

from agfsync.run.artifacts import recorded_or_computed
from agfsync.run.cache import FileContentsSignatureMixin, UpstreamSignatureMixin
from agfsync.run.failures import FailureKind, RecordsFailures
from agfsync.steps.llm_calls import LLMTimeLimit
from agfsync.text.categories import (
    IMAGE_PREFERENCES_STYLES_PATH,
    StyleScheme,
    StyleSpec,
    load_style_scheme,
)
from agfsync.text.prompt_files import prompt_id_for

if TYPE_CHECKING:
    from distilabel.typing import ChatType, StepOutput

STYLE_REWRITER_SYSTEM_PROMPT = """\
You rewrite prompts for a text-to-image model into a given visual style. Keep the
subject and every element of the original prompt, describe the scene so that the
style is unmistakable, and keep it safe (nothing scary, violent or explicit).
{instruction}
Reply with the rewritten prompt only: no quotes, no preamble."""


class StylePromptRewriting(
    Task, UpstreamSignatureMixin, FileContentsSignatureMixin, LLMTimeLimit, RecordsFailures
):
    """Rewrites each seed prompt in one style, once per complexity (the open
    image-preferences scheme: Cinematic, Photographic, Anime, ... x simplified/complex).

    The style of a seed is picked deterministically from its `prompt_id`, so styles
    spread evenly and a re-run assigns the same ones. Each complexity is one LLM
    call; a call that fails or returns nothing yields a row with `prompt` None and
    the reason in `rewrite_error`, so no seed disappears silently.

    Runtime parameters:
        - `styles_file`: YAML/JSON scheme; None: the shipped image-preferences one.
        - `time_limit`: seconds the step may spend on LLM calls in one run.

    Input columns:
        - prompt_id, prompt (`str`): the seed prompt.

    Output columns (one row per complexity):
        - prompt_id, prompt, category (the style), complexity, seed_prompt,
          prompt_model, rewrite_error.

    Categories:
        - text-generation

    Examples:
        Rewrite a seed prompt in a style, once per complexity:

        ```python
        from distilabel.models import OpenAILLM

        from agfsync.steps import StylePromptRewriting

        rewrite = StylePromptRewriting(llm=OpenAILLM(model="gpt-4o-mini"))
        rewrite.load()
        rows = next(rewrite.process([{"prompt_id": "kite", "prompt": "a kite above hills"}]))
        # [{"prompt_id": "kite-simplified", "prompt": "...", "category": "Anime",
        #   "complexity": "simplified", "seed_prompt": "a kite above hills", ...}, ...]
        ```
    """

    failure_column: ClassVar[str] = "rewrite_error"

    styles_file: RuntimeParameter[str] | None = Field(
        default=None, description="Style scheme file; None: the image-preferences scheme."
    )

    _scheme: StyleScheme | None = PrivateAttr(default=None)

    @property
    def signature_files(self) -> list[Path]:
        return [Path(self.styles_file) if self.styles_file else IMAGE_PREFERENCES_STYLES_PATH]

    def load(self) -> None:
        super().load()
        self._scheme = load_style_scheme(self.styles_file)

    @property
    def inputs(self) -> list[str]:
        return ["prompt_id", "prompt"]

    @property
    def outputs(self) -> list[str]:
        return [
            "prompt_id",
            "prompt",
            "category",
            "complexity",
            "seed_prompt",
            "prompt_model",
            "rewrite_error",
        ]

    def style_for(self, prompt_id: str) -> StyleSpec:
        assert self._scheme is not None, "load() must run first"
        digest = int(hashlib.sha256(prompt_id.encode()).hexdigest(), 16)
        return self._scheme.styles[digest % len(self._scheme.styles)]

    def format_input(self, input: dict[str, Any]) -> "ChatType":
        style = self.style_for(input["prompt_id"])
        substyles = f" (for example {', '.join(style.substyles)})" if style.substyles else ""
        return [
            {
                "role": "system",
                "content": STYLE_REWRITER_SYSTEM_PROMPT.format(instruction=input["instruction"]),
            },
            {
                "role": "user",
                "content": f"Style: {style.name}{substyles}: {style.description}\n"
                f"Prompt: {input['prompt']}",
            },
        ]

    def format_output(self, output: str | None, input: dict[str, Any] | None = None) -> dict:
        text = (output or "").strip().strip('"').strip()
        return {"prompt": text or None}

    def process(self, inputs: StepInput) -> "StepOutput":
        # Each seed is a unit of work (its rewrites); the seeds not in the journal go out
        # together, and the ones that fail are asked again when the same command runs.
        assert self._scheme is not None
        per_seed = len(self._scheme.complexities)

        def rewrite(units: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
            rows = self._rewrite([seed for (seed,) in units])
            return [rows[start : start + per_seed] for start in range(0, len(rows), per_seed)]

        results = recorded_or_computed(self, [[seed] for seed in inputs], rewrite)
        yield [row for rows in results for row in rows]

    def _rewrite(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        assert self.llm is not None and self._scheme is not None
        jobs = [
            {**row, "instruction": complexity.instruction, "complexity": complexity.name}
            for row in inputs
            for complexity in self._scheme.complexities
        ]
        try:
            outputs = self.ask_llm([self.format_input(job) for job in jobs])
            texts = [output["generations"][0] for output in outputs]
            error = None
        except Exception as failure:
            # The client has already spent its own retries; the rows say why.
            texts, error = [None] * len(jobs), FailureKind.REQUEST_FAILED.message(failure)
        rows = []
        for job, text in zip(jobs, texts, strict=True):
            style = self.style_for(job["prompt_id"]).name
            prompt = self.format_output(text)["prompt"]
            rows.append(
                {
                    "prompt_id": prompt_id_for(f"{style}/{job['complexity']}", job["prompt"]),
                    "prompt": prompt,
                    "category": style,
                    "complexity": job["complexity"],
                    "seed_prompt": job["prompt"],
                    "prompt_model": self.llm.model_name,
                    "rewrite_error": error or (None if prompt else "empty rewrite"),
                }
            )
        return rows
