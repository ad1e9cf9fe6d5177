"""The prompt stage: an LLM writes new prompts for each category."""

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from distilabel.mixins.runtime_parameters import RuntimeParameter
from distilabel.steps import GeneratorStep, StepInput
from distilabel.steps.tasks import Task
from pydantic import Field, PrivateAttr

from agfsync.llm.json_output import MalformedOutputError, parse_json_list
from agfsync.progress import report_done
from agfsync.run.artifacts import recorded_or_computed
from agfsync.run.cache import FileContentsSignatureMixin, UpstreamSignatureMixin
from agfsync.run.failures import FailureKind, RecordsFailures
from agfsync.run.usage import add_token_usage
from agfsync.steps.llm_calls import LLMTimeLimit
from agfsync.text.categories import AGFSYNC_CATEGORIES_PATH, load_categories
from agfsync.text.compare import normalize_text
from agfsync.text.prompt_files import prompt_id_for

if TYPE_CHECKING:
    from distilabel.typing import ChatType, GeneratorStepOutput, StepOutput

PROMPT_WRITER_SYSTEM_PROMPT = """\
You write prompts for a text-to-image model. Each prompt describes one picture that
could be drawn or photographed: concrete, visual and detailed, with several elements
(objects, people or animals, colors, materials, counts, positions, setting, light).
Nothing scary, violent or explicit. Vary the length: mix short prompts of about ten
words with long ones of forty words or more. Every prompt must be new: do not repeat
or paraphrase the examples or each other. Reply with JSON only: an object
{{"prompts": [...]}} holding a list of {count} strings."""

PROMPTS_RESPONSE_SCHEMA = {
    "type": "object",
    "properties": {"prompts": {"type": "array", "items": {"type": "string"}}},
    "required": ["prompts"],
}
"""JSON schema of a prompt-writing reply, for providers with native structured output."""


class LoadCategories(GeneratorStep, FileContentsSignatureMixin):
    """Emits one row per prompt category, read from a YAML/JSON file (default: the
    12 AGFSync categories with 5 examples each).

    Runtime parameters:
        - `categories_file`: YAML or JSON list of {name, description, examples}.
        - `prompts_per_category`: target number of prompts per category.

    Output columns:
        - category, category_description (`str`), category_examples (`list[str]`),
          prompts_per_category (`int`).

    Categories:
        - load

    Examples:
        Read the 12 AGFSync categories:

        ```python
        from agfsync.steps import LoadCategories

        loader = LoadCategories(prompts_per_category=10)
        loader.load()
        rows, is_last = next(loader.process())
        # rows[0]: {"category": "Natural Landscapes", "category_description": "...",
        #           "category_examples": [...], "prompts_per_category": 10}
        ```
    """

    categories_file: RuntimeParameter[str] | None = Field(
        default=None, description="YAML/JSON categories; None: the 12 AGFSync categories."
    )
    prompts_per_category: RuntimeParameter[int] = Field(
        default=10, ge=1, description="Target number of prompts per category."
    )

    _rows: list[dict[str, Any]] = PrivateAttr(default_factory=list)

    @property
    def signature_files(self) -> list[Path]:
        return [Path(self.categories_file) if self.categories_file else AGFSYNC_CATEGORIES_PATH]

    def load(self) -> None:
        super().load()
        self._rows = [
            {
                "category": category.name,
                "category_description": category.description,
                "category_examples": category.examples,
                "prompts_per_category": self.prompts_per_category,
            }
            for category in load_categories(self.categories_file)
        ]

    @property
    def outputs(self) -> list[str]:
        return ["category", "category_description", "category_examples", "prompts_per_category"]

    def process(self, offset: int = 0) -> "GeneratorStepOutput":
        start = offset
        while start < len(self._rows):
            end = start + self.batch_size
            yield self._rows[start:end], end >= len(self._rows)
            start = end


class CategoryPromptGeneration(Task, UpstreamSignatureMixin, LLMTimeLimit, RecordsFailures):
    """Writes `prompts_per_category` new prompts for each category row.

    Each call asks the LLM for `prompts_per_call` prompts (a JSON list), showing the
    category's description and examples; calls repeat until the target is reached
    or `max_calls` are spent. Prompts repeating an example or an earlier prompt of
    the category (normalized text) are skipped. A category that falls short is
    reported as a warning in the log and in `prompt_generation_notes` of its rows;
    `agfsync generate` also prints prompts per category against the target.

    Runtime parameters:
        - `prompts_per_call`, `max_calls`.
        - `time_limit`: seconds the step may spend on LLM calls in one run.

    Input columns:
        - category, category_description, category_examples, prompts_per_category.

    Output columns (one row per prompt):
        - prompt_id, prompt, category, prompt_model.
        - prompt_generation_notes (`str`): shortfall or failure of the category; None.
        - prompt_error (`str`): set when the category fell short because requests failed
          (after the client's retries); running the same command again asks again.
        - prompt_usage (`dict`): tokens spent on the category (on its first row).

    Categories:
        - text-generation

    Examples:
        Write prompts for one category with any distilabel LLM:

        ```python
        from distilabel.models import OpenAILLM

        from agfsync.steps import CategoryPromptGeneration

        writer = CategoryPromptGeneration(
            llm=OpenAILLM(model="gpt-4o-mini"),  # key from OPENAI_API_KEY
            prompts_per_call=3,
            max_calls=2,
        )
        writer.load()
        rows = next(
            writer.process(
                [
                    {
                        "category": "Animals",
                        "category_description": "Animals in their habitats.",
                        "category_examples": ["a heron standing in reeds at dawn"],
                        "prompts_per_category": 3,
                    }
                ]
            )
        )
        # [{"prompt_id": "3f1c...", "prompt": "a red fox ...", "category": "Animals", ...}]
        ```
    """

    failure_column: ClassVar[str] = "prompt_error"

    prompts_per_call: RuntimeParameter[int] = Field(
        default=10, ge=1, description="Prompts asked for in one call."
    )
    max_calls: RuntimeParameter[int] = Field(
        default=5, ge=1, description="Calls per category before giving up on the target."
    )

    @property
    def inputs(self) -> list[str]:
        return ["category", "category_description", "category_examples", "prompts_per_category"]

    @property
    def outputs(self) -> list[str]:
        return [
            "prompt_id",
            "prompt",
            "category",
            "prompt_model",
            "prompt_generation_notes",
            "prompt_error",
            "prompt_usage",
        ]

    def format_input(self, input: dict[str, Any]) -> "ChatType":
        examples = "\n".join(f"- {example}" for example in input["category_examples"])
        return [
            {
                "role": "system",
                "content": PROMPT_WRITER_SYSTEM_PROMPT.format(count=self.prompts_per_call),
            },
            {
                "role": "user",
                "content": f"Category: {input['category']} ({input['category_description']})\n"
                f"Examples:\n{examples}\n"
                f"Write {self.prompts_per_call} new prompts for this category.",
            },
        ]

    def format_output(self, output: str | None, input: dict[str, Any] | None = None) -> dict:
        return {"prompts": [str(item) for item in parse_json_list(output or "", key="prompts")]}

    def process(self, inputs: StepInput) -> "StepOutput":
        # Each category is a unit of work: its prompts, once written without a failed
        # request, are taken from the journal when the same command runs again.
        results = recorded_or_computed(
            self,
            [[category] for category in inputs],
            lambda units: [self._generate_for(category) for (category,) in units],
        )
        rows = [row for unit in results for row in unit]
        written = sum(row["prompt"] is not None for row in rows)
        report_done(self._logger, "prompts", written, f"{self.name}: {written} prompts written")
        yield rows

    def _generate_for(self, category: dict[str, Any]) -> list[dict[str, Any]]:
        assert self.llm is not None
        target = category["prompts_per_category"]
        seen = {normalize_text(example) for example in category["category_examples"]}
        prompts: list[str] = []
        problems: list[str] = []
        usage = {"input_tokens": 0, "output_tokens": 0}
        chat = self.format_input(category)
        for _call in range(self.max_calls):
            if len(prompts) >= target:
                break
            try:
                (output,) = self.ask_llm([chat])
            except Exception as error:
                # The client has already spent its own retries; the next call tries again.
                problems.append(FailureKind.REQUEST_FAILED.message(error))
                continue
            add_token_usage(usage, output.get("statistics", {}))
            try:
                written = self.format_output(output["generations"][0])["prompts"]
            except MalformedOutputError as error:
                problems.append(str(error))
                continue
            for prompt in written:
                if prompt.strip() and normalize_text(prompt) not in seen:
                    seen.add(normalize_text(prompt))
                    prompts.append(prompt.strip())
        prompts = prompts[:target]
        # Short because requests failed (not because the LLM repeated itself): a re-run
        # of the same command asks again.
        failed_requests = [
            problem for problem in problems if FailureKind.of(problem) is FailureKind.REQUEST_FAILED
        ]
        prompt_error = (
            f"{len(failed_requests)} failed requests: {json.dumps(sorted(set(failed_requests)))}"
            if failed_requests and len(prompts) < target
            else None
        )
        notes = None
        if len(prompts) < target:
            notes = f"{len(prompts)} of {target} prompts after {self.max_calls} calls" + (
                f"; problems: {json.dumps(sorted(set(problems)))}" if problems else ""
            )
            self._logger.warning(f"Category {category['category']!r}: {notes}")
        base = {
            "category": category["category"],
            "prompt_model": self.llm.model_name,
            "prompt_error": prompt_error,
        }
        if not prompts:
            return [
                {
                    **base,
                    "prompt_id": None,
                    "prompt": None,
                    "prompt_generation_notes": notes,
                    "prompt_usage": usage,
                }
            ]
        return [
            {
                **base,
                "prompt_id": prompt_id_for(category["category"], prompt),
                "prompt": prompt,
                "prompt_generation_notes": notes,
                "prompt_usage": usage if index == 0 else None,
            }
            for index, prompt in enumerate(prompts)
        ]
