"""Loading prompts (with their QA pairs) from a file into a pipeline."""

from pathlib import Path
from typing import TYPE_CHECKING, Any

from distilabel.mixins.runtime_parameters import RuntimeParameter
from distilabel.steps import GeneratorStep
from pydantic import Field, PrivateAttr

from agfsync.progress import report_done
from agfsync.run.cache import FileContentsSignatureMixin
from agfsync.text.prompt_files import SAMPLE_PROMPTS_PATH, load_prompt_records

if TYPE_CHECKING:
    from distilabel.typing import GeneratorStepOutput

PROMPT_COLUMNS = ["prompt_id", "prompt", "category", "prompt_model", "qa_pairs"]


class LoadPrompts(GeneratorStep, FileContentsSignatureMixin):
    """Loads prompts and their question–answer pairs from a JSONL or JSON file.

    The file is validated when the step loads: every row needs `prompt` and
    `category`, `qa_pairs` must follow the `QAPair` schema, and a missing or
    empty file stops the run before any model is loaded. Without `data_files`
    the step reads the 24-prompt sample shipped with agfsync, which is what the
    offline preset runs on.

    Attributes:
        data_files: path of the prompt file; `None` reads the shipped sample.
        num_prompts: keep only the first `num_prompts` rows.

    Runtime parameters:
        - `data_files`: path of the prompt file.
        - `num_prompts`: how many prompts to keep.
        - `batch_size`: rows per batch sent downstream.

    Output columns:
        - prompt_id (`str`): stable id, used in image file names and seeds.
        - prompt (`str`): the text-to-image prompt.
        - category (`str`): the prompt's category.
        - prompt_model (`str`): what wrote the prompt (`human` for hand-written).
        - qa_pairs (`list[dict]`): question, answer, element_type, element, valid.

    Categories:
        - load

    Examples:
        Read the shipped sample:

        ```python
        from agfsync.steps import LoadPrompts

        loader = LoadPrompts(batch_size=8)
        loader.load()
        rows, is_last = next(loader.process())
        ```
    """

    data_files: RuntimeParameter[str] | None = Field(
        default=None,
        description="JSONL/JSON prompt file; None reads the sample shipped with agfsync.",
    )
    num_prompts: RuntimeParameter[int] | None = Field(
        default=None, description="Keep only the first N prompts of the file."
    )

    _records: list[dict[str, Any]] = PrivateAttr(default_factory=list)

    @property
    def signature_files(self) -> list[Path]:
        return [Path(self.data_files) if self.data_files else SAMPLE_PROMPTS_PATH]

    def load(self) -> None:
        super().load()
        records = load_prompt_records(self.data_files)
        self._records = records[: self.num_prompts] if self.num_prompts else records

    @property
    def outputs(self) -> list[str]:
        return PROMPT_COLUMNS

    def process(self, offset: int = 0) -> "GeneratorStepOutput":
        records = self._records
        start = offset
        while start < len(records):
            end = start + self.batch_size
            batch = records[start:end]
            report_done(
                self._logger, "prompts", len(batch), f"{self.name}: {len(batch)} prompts read"
            )
            yield batch, end >= len(records)
            start = end
