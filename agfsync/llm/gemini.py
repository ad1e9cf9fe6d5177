"""A distilabel LLM for Google Gemini on the maintained `google-genai` client.

distilabel ships no Gemini LLM, and `google-generativeai` is deprecated upstream, so
this one talks to the Gemini API (`POST /{version}/models/{model}:generateContent`)
through `google.genai.Client`. `google-genai` is an optional dependency
(`pip install 'agfsync[gemini]'`); it is imported only when the LLM is loaded.
"""

import asyncio
import base64
import binascii
import json
import re
from typing import TYPE_CHECKING, Any

from distilabel.mixins.runtime_parameters import RuntimeParameter
from distilabel.models.llms.base import AsyncLLM
from distilabel.models.llms.utils import prepare_output
from distilabel.typing import FormattedInput, GenerateOutput
from pydantic import BaseModel, Field, PositiveInt, PrivateAttr, SecretStr, validate_call

from agfsync.llm.providers import api_key_from_env, key_variables_text
from agfsync.retry import RETRYABLE_STATUS_CODES, Backoff, acall_with_retries, server_delay

if TYPE_CHECKING:
    from google.genai import Client
    from google.genai.types import Content, GenerateContentResponse, Part

MAX_CANDIDATES = 8
"""The Gemini API's limit on `candidateCount`."""

# Indirection so tests can observe the backoff without really sleeping.
_sleep = asyncio.sleep


def _api_key_from_env() -> SecretStr | None:
    value = api_key_from_env("gemini")
    return SecretStr(value) if value else None


class GeminiLLM(AsyncLLM):
    """Google Gemini through the `google-genai` async client.

    Chat messages are converted to Gemini contents: system messages become the
    `system_instruction`, user messages role "user" and assistant messages role
    "model". `num_generations` is asked for as `candidateCount` in one request (up
    to `max_candidates_per_request`, several requests beyond it); a model that
    rejects several candidates per request is detected from its 400 answer, and from
    then on this LLM sends one request per generation. A candidate that was blocked
    or came back without text yields `None`, as does every generation of a blocked
    prompt.

    Retries are done here rather than by google-genai's `HttpRetryOptions`, whose
    exponential backoff ignores the server's hints: 408, 429, 5xx, timeouts and
    connection errors are retried up to `max_retries` times with jittered
    exponential backoff (`retry_initial_delay` doubling up to `retry_max_delay`),
    and an answer that says how long to wait (a `Retry-After` header, or the
    `google.rpc.RetryInfo` detail Gemini puts in its 429s) waits at least that,
    still capped at `retry_max_delay`. When the retries are spent the last error
    (`google.genai.errors.APIError`, or the transport's timeout) is raised, so a
    task can record the failure; nothing is turned into `None` generations.

    Token statistics come from `usageMetadata`, one entry per request:
    `input_tokens` is `promptTokenCount`, `output_tokens` is `candidatesTokenCount`
    plus `thoughtsTokenCount` (thinking models bill their thoughts as output).

    The API key is a `SecretStr`, never part of `dump()` (distilabel leaves out
    every field named `api_key`) nor of log messages; it travels only in the
    `x-goog-api-key` header.

    Attributes:
        model: the Gemini model, e.g. "gemini-2.0-flash" or "gemini-2.5-flash".
        api_key: the Gemini API key. Defaults to the environment variable
            `GEMINI_API_KEY`, or else `GOOGLE_API_KEY`; `load()` fails without one.
        base_url: the API's base URL; `None` means google-genai's default
            (`https://generativelanguage.googleapis.com/`, or `GOOGLE_GEMINI_BASE_URL`).
        api_version: the API version in the request path ("v1", "v1beta"); `None`
            means google-genai's default (or `GOOGLE_GENAI_API_VERSION`).
        max_retries: how many times a failed request is retried. Defaults to `6`.
        retry_initial_delay: seconds before the first retry, doubled on each
            further one. Defaults to `1.0`.
        retry_max_delay: the longest wait between two attempts, in seconds, also
            bounding the server's `Retry-After`. Defaults to `60.0`.
        timeout: seconds one request may take before it is abandoned (and retried).
            Defaults to `120`.
        max_candidates_per_request: the most candidates asked for in one request
            (the API allows 8). Defaults to `8`.

    Runtime parameters:
        - `api_key`: the Gemini API key.
        - `base_url`: the API's base URL.
        - `api_version`: the API version in the request path.
        - `max_retries`: how many times a failed request is retried.
        - `retry_initial_delay`: seconds before the first retry.
        - `retry_max_delay`: the longest wait between two attempts.
        - `timeout`: seconds one request may take.
        - `max_candidates_per_request`: the most candidates per request.

    Examples:
        Generate text:

        ```python
        from agfsync.llm.gemini import GeminiLLM

        llm = GeminiLLM(model="gemini-2.0-flash")  # key from GEMINI_API_KEY
        llm.load()

        output = llm.generate_outputs(
            inputs=[[{"role": "user", "content": "Hello world!"}]],
            num_generations=2,
            temperature=0.7,
        )
        # [{"generations": ["Hello! ...", "Hi! ..."],
        #   "statistics": {"input_tokens": [3], "output_tokens": [25]}}]
        ```

        Generate JSON following a schema:

        ```python
        llm.generate_outputs(
            inputs=[[{"role": "user", "content": "Three colours, as a JSON list."}]],
            response_schema={"type": "array", "items": {"type": "string"}},
        )
        ```

        Decompose prompts into QA pairs with it:

        ```python
        from agfsync.steps.qa_decomposition import QADecomposition

        task = QADecomposition(
            llm=GeminiLLM(model="gemini-2.0-flash", generation_kwargs={"temperature": 0.7}),
            num_generations=6,
        )
        ```
    """

    model: str = Field(description="The Gemini model, e.g. 'gemini-2.0-flash'.")
    api_key: RuntimeParameter[SecretStr] | None = Field(
        default_factory=_api_key_from_env,
        description="The Gemini API key (default: $GEMINI_API_KEY, else $GOOGLE_API_KEY).",
    )
    base_url: RuntimeParameter[str] | None = Field(
        default=None, description="The API's base URL; None for google-genai's default."
    )
    api_version: RuntimeParameter[str] | None = Field(
        default=None, description="The API version in the path; None for google-genai's default."
    )
    max_retries: RuntimeParameter[int] = Field(
        default=6, ge=0, description="How many times a failed request is retried."
    )
    retry_initial_delay: RuntimeParameter[float] = Field(
        default=1.0, ge=0, description="Seconds before the first retry, doubled on each retry."
    )
    retry_max_delay: RuntimeParameter[float] = Field(
        default=60.0, ge=0, description="The longest wait between attempts, in seconds."
    )
    timeout: RuntimeParameter[float] = Field(
        default=120, gt=0, description="Seconds one request may take before it is retried."
    )
    max_candidates_per_request: RuntimeParameter[int] = Field(
        default=MAX_CANDIDATES,
        ge=1,
        le=MAX_CANDIDATES,
        description="The most candidates asked for in one request (API limit: 8).",
    )

    _aclient: Any = PrivateAttr(default=None)
    _transient_errors: tuple[type[BaseException], ...] = PrivateAttr(default=())
    _single_candidate: bool = PrivateAttr(default=False)

    @property
    def model_name(self) -> str:
        """Returns the model name used for the LLM."""
        return self.model

    def load(self) -> None:
        """Creates the `google.genai.Client`; fails when no API key is configured."""
        super().load()
        api_key = self.api_key.get_secret_value().strip() if self.api_key is not None else ""
        if not api_key:
            raise ValueError(
                f"{type(self).__name__} needs a Gemini API key: set "
                f"{key_variables_text('gemini')}, or pass `api_key`."
            )
        try:
            from google import genai
            from google.genai import types
        except ImportError as error:
            raise ImportError(
                f"{type(self).__name__} needs the `google-genai` package: "
                "pip install 'agfsync[gemini]'"
            ) from error

        http_options = types.HttpOptions(
            base_url=self.base_url,
            api_version=self.api_version,
            timeout=max(1, round(self.timeout * 1000)),  # milliseconds
            # One attempt per call: the retries are ours (see `_generate_once`),
            # and a set `retry_options` also stops the aiohttp transport's own
            # implicit reconnect-and-retry.
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        client: Client = genai.Client(api_key=api_key, vertexai=False, http_options=http_options)
        self._aclient = client.aio
        self._transient_errors = _transient_error_types()

    def unload(self) -> None:
        """Drops the client (it holds connection pools, which cannot be pickled)."""
        self._aclient = None
        super().unload()

    @validate_call
    async def agenerate(
        self,
        input: FormattedInput,
        num_generations: PositiveInt = 1,
        max_new_tokens: PositiveInt = 1024,
        temperature: float = 1.0,
        top_p: float | None = None,
        response_schema: dict[str, Any] | None = None,
        response_mime_type: str | None = None,
        thinking_budget: int | None = None,
    ) -> GenerateOutput:
        """Generates `num_generations` responses for the given input with Gemini.

        Args:
            input: a chat (system, user and assistant messages; text, or images as
                base64 `data:` URLs), a plain string (one user message), or a chat
                with a distilabel structured-output config whose JSON schema is then
                used as `response_schema`.
            num_generations: the number of candidates to generate. Defaults to `1`.
            max_new_tokens: `maxOutputTokens`, per candidate. Defaults to `1024`.
            temperature: the sampling temperature. Defaults to `1.0`.
            top_p: nucleus sampling; `None` leaves the model's default. Defaults to
                `None`.
            response_schema: a JSON schema (OpenAPI subset, as Gemini accepts it) the
                answer must follow; sets `response_mime_type` to "application/json"
                unless given. Defaults to `None`.
            response_mime_type: the answer's MIME type, e.g. "application/json" or
                "text/x.enum". Defaults to `None` (text).
            thinking_budget: for thinking models (Gemini 2.5), the most tokens spent
                thinking, `0` to turn thinking off where the model allows it; thoughts
                count against `max_new_tokens`. Defaults to `None` (the model's own).

        Returns:
            The generations (`None` for a blocked or empty candidate) and the token
            statistics, one entry per request.
        """
        if self._aclient is None:
            raise RuntimeError(f"{type(self).__name__} must be loaded before generating.")
        messages, structured_schema = _split_structured_input(input)
        if response_schema is None:
            response_schema = structured_schema
        system_instruction, contents = _to_gemini_contents(messages)
        config = {
            "system_instruction": system_instruction,
            "max_output_tokens": max_new_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "response_mime_type": response_mime_type
            or ("application/json" if response_schema is not None else None),
            "response_schema": response_schema,
            "thinking_config": None
            if thinking_budget is None
            else {"thinking_budget": thinking_budget},
            # No tools are sent; this also silences google-genai's per-request
            # "AFC is enabled" log line. It stays client-side, not in the request.
            "automatic_function_calling": {"disable": True},
        }

        single = self._single_candidate
        try:
            responses = await self._generate_candidates(contents, config, num_generations, single)
        except Exception as error:
            if single or not _rejects_multiple_candidates(error):
                raise
            if not self._single_candidate:  # concurrent calls may all land here
                self._single_candidate = True
                self._logger.warning(
                    f"Model {self.model!r} rejects several candidates per request"
                    f" ({_describe(error)}); asking for one candidate per request from now on."
                )
            responses = await self._generate_candidates(contents, config, num_generations, True)

        generations: list[str | None] = []
        input_tokens: list[int] = []
        output_tokens: list[int] = []
        for response, wanted in responses:
            generations.extend(self._texts(response, wanted))
            usage = response.usage_metadata
            if usage is not None:
                input_tokens.append(usage.prompt_token_count or 0)
                output_tokens.append(
                    (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)
                )
        return prepare_output(generations, input_tokens=input_tokens, output_tokens=output_tokens)

    async def _generate_candidates(
        self,
        contents: list["Content"],
        config: dict[str, Any],
        num_generations: int,
        single: bool,
    ) -> list[tuple["GenerateContentResponse", int]]:
        """One request per group of at most `max_candidates_per_request` candidates
        (per candidate when `single`), sent concurrently."""
        limit = 1 if single else self.max_candidates_per_request
        sizes = [limit] * (num_generations // limit)
        if num_generations % limit:
            sizes.append(num_generations % limit)
        responses = await asyncio.gather(
            *(self._generate_once(contents, {**config, "candidate_count": n}) for n in sizes)
        )
        return list(zip(responses, sizes, strict=True))

    async def _generate_once(
        self, contents: list["Content"], config: dict[str, Any]
    ) -> "GenerateContentResponse":
        """One `generateContent` call, retried with backoff on transient failures."""
        from google.genai import types

        generate_config = types.GenerateContentConfig(**config)

        async def call() -> "GenerateContentResponse":
            response: GenerateContentResponse = await self._aclient.models.generate_content(
                model=self.model, contents=contents, config=generate_config
            )
            return response

        def report(error: BaseException, attempt: int, delay: float) -> None:
            self._logger.warning(
                f"Gemini request failed ({_describe(error)}); retry {attempt}/"
                f"{self.max_retries} in {delay:.2f}s."
            )

        return await acall_with_retries(
            call,
            backoff=Backoff(self.max_retries, self.retry_initial_delay, self.retry_max_delay),
            is_transient=self._is_transient,
            delay_asked=_server_retry_delay,
            on_retry=report,
            sleep=lambda seconds: _sleep(seconds),
        )

    def _is_transient(self, error: BaseException) -> bool:
        code = getattr(error, "code", None)
        if _is_api_error(error):
            return code in RETRYABLE_STATUS_CODES
        return isinstance(error, self._transient_errors)

    def _texts(self, response: "GenerateContentResponse", wanted: int) -> list[str | None]:
        """The text of each of the `wanted` candidates, `None` where there is none."""
        feedback = response.prompt_feedback
        if feedback is not None and feedback.block_reason is not None:
            self._logger.warning(f"Gemini blocked the prompt: {feedback.block_reason}.")
        candidates = sorted(
            response.candidates or [],
            key=lambda candidate: candidate.index if candidate.index is not None else 0,
        )
        texts = [_candidate_text(candidate.content) for candidate in candidates[:wanted]]
        return texts + [None] * (wanted - len(texts))


def _split_structured_input(
    input: FormattedInput,
) -> tuple[list[dict[str, Any]] | str, dict[str, Any] | None]:
    """A chat and, for distilabel's `(chat, structured_output)` inputs, its schema."""
    if not isinstance(input, tuple):
        return input, None
    messages, structured_output = input
    schema: Any = (structured_output or {}).get("schema")
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        schema = schema.model_json_schema()
    elif isinstance(schema, str):
        schema = json.loads(schema)
    return messages, schema


def _to_gemini_contents(
    messages: list[dict[str, Any]] | str,
) -> tuple[str | None, list["Content"]]:
    """distilabel chat messages as Gemini's system instruction and contents."""
    from google.genai import types

    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    system: list[str] = []
    contents: list[Content] = []
    for message in messages:
        role, content = message["role"], message["content"]
        if role == "system":
            system.extend(part.text for part in _to_parts(content) if part.text)
        elif role in ("user", "assistant"):
            contents.append(
                types.Content(role="user" if role == "user" else "model", parts=_to_parts(content))
            )
        else:
            raise ValueError(f"Unsupported chat role for Gemini: {role!r}.")
    return ("\n\n".join(system) or None), contents


_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)$", re.DOTALL)


def _to_parts(content: str | list[dict[str, Any]]) -> list["Part"]:
    from google.genai import types

    if isinstance(content, str):
        return [types.Part(text=content)]
    parts = []
    for item in content:
        if item.get("type") == "text":
            parts.append(types.Part(text=item["text"]))
        elif item.get("type") == "image_url":
            url = item["image_url"]["url"]
            match = _DATA_URL.match(url)
            if match is None:
                raise ValueError(
                    "Gemini images must be base64 `data:` URLs, not links "
                    f"(got one starting {url[:30]!r})."
                )
            try:
                data = base64.b64decode(match["data"], validate=True)
            except binascii.Error as error:
                raise ValueError(f"Invalid base64 image data: {error}") from error
            parts.append(types.Part.from_bytes(data=data, mime_type=match["mime"]))
        else:
            raise ValueError(f"Unsupported message content for Gemini: {item.get('type')!r}.")
    return parts


def _candidate_text(content: "Content | None") -> str | None:
    """The candidate's answer: its text parts (not thought summaries) joined."""
    if content is None or not content.parts:
        return None
    text = "".join(part.text for part in content.parts if part.text and not part.thought)
    return text or None


def _is_api_error(error: BaseException) -> bool:
    from google.genai import errors

    return isinstance(error, errors.APIError)


def _rejects_multiple_candidates(error: BaseException) -> bool:
    """Whether a 400 answer says the model takes a single candidate per request."""
    if not _is_api_error(error) or getattr(error, "code", None) != 400:
        return False
    return "candidate" in str(getattr(error, "message", "") or "").lower()


def _describe(error: BaseException) -> str:
    """A one-line account of a failure (never headers, so never the key)."""
    if _is_api_error(error):
        message = " ".join(str(getattr(error, "message", "") or "").split())
        return f"HTTP {getattr(error, 'code', '?')} {getattr(error, 'status', '')}: {message}"
    detail = " ".join(str(error).split())
    return f"{type(error).__name__}: {detail}" if detail else type(error).__name__


def _server_retry_delay(error: BaseException) -> float | None:
    """Seconds the server asked to wait: `Retry-After`, else a `RetryInfo` detail."""
    asked = server_delay(error)
    if asked is not None:
        return asked
    details = getattr(error, "details", None)  # the error body: {"error": {..., "details"}}
    if isinstance(details, dict):
        body = details.get("error", details)
        details = body.get("details") if isinstance(body, dict) else None
    for detail in details if isinstance(details, list) else []:
        if (
            isinstance(detail, dict)
            and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo")
            and isinstance(detail.get("retryDelay"), str)
        ):
            try:
                return max(0.0, float(detail["retryDelay"].removesuffix("s")))
            except ValueError:
                return None
    return None


def _transient_error_types() -> tuple[type[BaseException], ...]:
    """Timeouts and connection failures of whichever transports google-genai uses."""
    found: list[type[BaseException]] = [TimeoutError]
    for module_name, names in (
        ("httpx", ("TimeoutException", "NetworkError", "RemoteProtocolError")),
        ("httpx2", ("TimeoutException", "NetworkError", "RemoteProtocolError")),
        ("aiohttp", ("ClientConnectionError", "ServerTimeoutError")),
    ):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        found.extend(
            error_type
            for name in names
            if isinstance(error_type := getattr(module, name, None), type)
            and issubclass(error_type, BaseException)
        )
    return tuple(found)
