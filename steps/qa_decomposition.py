"""The QA stage: each prompt decomposed into validated yes/no question–answer pairs."""

import json
from typing import TYPE_CHECKING, Any, ClassVar

from distilabel.mixins.runtime_parameters import RuntimeParameter
from distilabel.steps import StepInput
from distilabel.steps.tasks import Task
from pydantic import Field

from agfsync.llm.json_output import MalformedOutputError, parse_json_list
from agfsync.progress import report_done
from agfsync.run.artifacts import recorded_or_computed
from agfsync.run.cache import UpstreamSignatureMixin
from agfsync.run.failures import FailureKind, RecordsFailures
from agfsync.run.usage import add_token_usage
from agfsync.steps.llm_calls import LLMTimeLimit
from agfsync.text.qa import validate_qa_pairs

if TYPE_CHECKING:
    from distilabel.typing import ChatType, StepOutput

QA_SYSTEM_PROMPT = """\
You turn an image description into a checklist for verifying a generated picture.
Write atomic yes/no questions, each checking exactly one detail that the description
states explicitly (not common sense, not an inference). The answer to every question
must be "yes" for a picture that follows the description. Cover the description as
completely as you can, with at least {min_questions} questions when it has that many
details, and never repeat a question.

Reply with JSON only, no other text: an object {{"questions": [...]}} whose list
holds one object per question, with:
"question": a general yes/no question, e.g. "Is the car red?";
"answer": "yes";
"element_type": one of object, human, animal, food, activity, attribute, counting,
color, material, spatial, location, shape, other;
"element": the word or phrase of the description that the question checks, copied exactly;
"flag": 1, or 0 if the detail is in fact not mentioned in the description."""


QA_RESPONSE_SCHEMA = {
    "type": "object",
    "properties": {
        "questions": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "question": {"type": "string"},
                    "answer": {"type": "string", "enum": ["yes"]},
                    "element_type": {"type": "string"},
                    "element": {"type": "string"},
                    "flag": {"type": "integer"},
                },
                "required": ["question", "answer", "element_type", "element", "flag"],
            },
        }
    },
    "required": ["questions"],
}
"""JSON schema of a decomposition round, for providers with native structured output."""


NO_PROMPT = "no prompt to decompose"
"""`qa_error` of a row whose prompt is missing upstream: not this step's failure."""


class QADecomposition(Task, UpstreamSignatureMixin, LLMTimeLimit, RecordsFailures):
    """Decomposes each prompt into atomic yes/no questions whose answer is "yes".

    The LLM is asked `num_generations` times per prompt (paper: 6 rounds); every
    round's JSON list is parsed tolerantly (code fences, trailing commas, single
    quotes, a truncated list keeps its complete items), rounds whose output cannot
    be parsed are asked again up to `max_format_retries` times, and the items of all
    rounds are validated and merged by `agfsync.text.qa.validate_qa_pairs`. Every dropped
    question is listed in `qa_rejected` with its reason; a prompt whose rounds all
    failed keeps its row with the reason in `qa_error`.

    Attributes:
        min_questions: how many questions the instructions ask for (official code: 15).
        max_format_retries: extra requests for rounds whose output was not JSON.

    Runtime parameters:
        - `num_generations`: rounds per prompt (paper: 6).
        - `max_format_retries`.
        - `time_limit`: seconds the step may spend on LLM calls in one run.

    Input columns:
        - prompt (`str`): the text to decompose.

    Output columns:
        - qa_pairs (`list[dict]`): question, answer, element_type, element, valid.
        - qa_rejected (`list[dict]`): question and reason of every dropped item.
        - qa_error (`str`): why no round could be read; None otherwise.
        - qa_usage (`dict`): input and output tokens spent on this prompt.
        - qa_model (`str`): the LLM's model name.

    Categories:
        - text-generation

    Examples:
        Decompose a prompt into yes/no questions:

        ```python
        from distilabel.models import OpenAILLM

        from agfsync.steps import QADecomposition

        qa = QADecomposition(llm=OpenAILLM(model="gpt-4o-mini"), num_generations=2)
        qa.load()
        (row,) = next(qa.process([{"prompt": "a red cube on top of a blue sphere"}]))
        # row["qa_pairs"]: [{"question": "Is there a cube?", "answer": "yes",
        #                    "element_type": "object", "element": "cube", "valid": True}, ...]
        ```
    """

    failure_column: ClassVar[str] = "qa_error"
    final_failures: ClassVar[tuple[str, ...]] = (NO_PROMPT,)

    min_questions: int = Field(default=15, ge=1)
    max_format_retries: RuntimeParameter[int] = Field(
        default=2, ge=0, description="Extra requests for rounds whose output was not JSON."
    )
    num_generations: RuntimeParameter[int] = Field(
        default=6, description="Decomposition rounds per prompt (paper: 6)."
    )

    @property
    def inputs(self) -> list[str]:
        return ["prompt"]

    @property
    def outputs(self) -> list[str]:
        return ["qa_pairs", "qa_rejected", "qa_error", "qa_usage", "qa_model"]

    def format_input(self, input: dict[str, Any]) -> "ChatType":
        return [
            {
                "role": "system",
                "content": QA_SYSTEM_PROMPT.format(min_questions=self.min_questions),
            },
            {"role": "user", "content": f"Description: {input['prompt']}"},
        ]

    def format_output(self, output: str | None, input: dict[str, Any] | None = None) -> dict:
        return {"qa_items": parse_json_list(output or "", key="questions")}

    def process(self, inputs: StepInput) -> "StepOutput":
        # Each prompt is a unit of work: a prompt decomposed in an earlier run of the same
        # command is not asked again, one whose rounds all failed is.
        results = recorded_or_computed(
            self, [[row] for row in inputs], lambda units: [[row] for row in self._decompose(units)]
        )
        for row, (decomposed,) in zip(inputs, results, strict=True):
            row.update(decomposed)
        report_done(self._logger, "decomposed", len(inputs), f"{self.name}: {len(inputs)} prompts")
        yield inputs

    def _decompose(self, units: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        assert self.llm is not None
        inputs = [row for (row,) in units]
        chats = [self.format_input(row) for row in inputs]
        rounds: list[list[list[Any]]] = [[] for _ in inputs]
        failures: list[list[str]] = [[] for _ in inputs]
        usage = [{"input_tokens": 0, "output_tokens": 0} for _ in inputs]
        # A row without a prompt (its generation failed upstream) is not sent.
        pending = {
            index: self.num_generations if row["prompt"] else 0 for index, row in enumerate(inputs)
        }
        for _attempt in range(1 + self.max_format_retries):
            # One request per group of prompts missing the same number of rounds.
            groups: dict[int, list[int]] = {}
            for index, missing in pending.items():
                if missing > 0:
                    groups.setdefault(missing, []).append(index)
            for missing, indices in groups.items():
                try:
                    outputs = self.ask_llm([chats[index] for index in indices], missing)
                except Exception as error:
                    # The client has already spent its own retries (429s, 5xx,
                    # timeouts); the rows record why and the next attempt asks again.
                    for index in indices:
                        failures[index].append(FailureKind.REQUEST_FAILED.message(error))
                    continue
                for index, output in zip(indices, outputs, strict=True):
                    add_token_usage(usage[index], output.get("statistics", {}))
                    for text in output["generations"]:
                        try:
                            rounds[index].append(self.format_output(text)["qa_items"])
                            pending[index] -= 1
                        except MalformedOutputError as error:
                            failures[index].append(str(error))
        for index, row in enumerate(inputs):
            accepted, rejected = validate_qa_pairs(row["prompt"] or "", rounds[index])
            row["qa_pairs"] = accepted
            row["qa_rejected"] = rejected
            if not row["prompt"]:
                row["qa_error"] = NO_PROMPT
            elif rounds[index]:
                row["qa_error"] = None
            else:
                row["qa_error"] = (
                    f"no usable output after {len(failures[index])} failures: "
                    + json.dumps(sorted(set(failures[index])))
                )
            row["qa_usage"] = usage[index]
            row["qa_model"] = self.llm.model_name
        return inputs
