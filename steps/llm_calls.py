"""How our LLM steps call their LLM: within an overall time limit per step.

A client's own timeout bounds one request (distilabel's OpenAILLM: 120 s, 6 retries),
not a step: against a server that accepts connections and never answers, a step
could wait for many minutes per batch. `time_limit` bounds what one step spends on
LLM calls in one run; a call that would run past it is cut off, and the rows it was
for record the failure (`request failed: ...`), so the next run of the same command
asks again for exactly those.
"""

import asyncio
import time
from typing import TYPE_CHECKING, Any, Self

from distilabel.mixins.runtime_parameters import RuntimeParameter
from distilabel.models.llms.base import AsyncLLM
from pydantic import BaseModel, Field, PrivateAttr, model_validator

from agfsync.run.cache import keep_out_of_the_cache_key

if TYPE_CHECKING:
    from distilabel.typing import FormattedInput, GenerateOutput


class LLMTimeLimitReached(RuntimeError):
    """The step's `time_limit` ran out before this call could finish."""


class LLMTimeLimit(BaseModel):
    """Mixin of our LLM steps: `ask_llm` calls `self.llm` within `time_limit`."""

    time_limit: RuntimeParameter[float] | None = Field(
        default=None,
        gt=0,
        description="Seconds this step may spend on LLM calls in one run (from its first "
        "call); rows not answered in time record the failure and are asked again by the "
        "next run. None: no limit beyond the client's per-request timeout.",
    )

    _deadline: float | None = PrivateAttr(default=None)

    if TYPE_CHECKING:
        llm: Any  # every step using the mixin has one
        exclude_from_signature: set[str]

    @model_validator(mode="after")
    def _limit_is_not_part_of_the_cache_key(self) -> Self:
        """A rerun with another time limit reuses the work already done."""
        keep_out_of_the_cache_key(self, "time_limit")
        return self

    def ask_llm(
        self, inputs: list["FormattedInput"], num_generations: int = 1
    ) -> list["GenerateOutput"]:
        """`self.llm.generate_outputs(...)` with the step's generation kwargs, cut off
        (LLMTimeLimitReached) when the step's time limit runs out."""
        llm = self.llm
        kwargs = llm.get_generation_kwargs()
        if self.time_limit is None:
            return llm.generate_outputs(inputs=inputs, num_generations=num_generations, **kwargs)
        if self._deadline is None:
            self._deadline = time.monotonic() + self.time_limit
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise LLMTimeLimitReached(f"time limit of {self.time_limit:g} s reached")
        if not isinstance(llm, AsyncLLM) or llm.use_offline_batch_generation:
            return llm.generate_outputs(inputs=inputs, num_generations=num_generations, **kwargs)
        calls = llm._agenerate(inputs=inputs, num_generations=num_generations, **kwargs)
        try:
            return llm.event_loop.run_until_complete(asyncio.wait_for(calls, remaining))
        except TimeoutError:
            raise LLMTimeLimitReached(f"time limit of {self.time_limit:g} s reached") from None
