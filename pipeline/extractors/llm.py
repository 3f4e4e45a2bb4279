"""LLM extraction through the ``openai`` client: OpenAI or any OpenAI-compatible server (vLLM, Ollama, llama.cpp)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import urlsplit

import msgspec
import openai
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from openai.types.shared_params import ResponseFormatJSONObject, ResponseFormatJSONSchema

from contracts import Criterion, Document, ExtractedRow, ExtractionReply, PreparedSchema
from pipeline.errors import ExtractionError, ExtractorRefused
from pipeline.extractors import prompts
from pipeline.extractors.base import Extraction, ExtractorInfo, Screening, ScreeningReply
from pipeline.extractors.chunks import request_tokens, split_by_section
from pipeline.extractors.limits import Limiter
from pipeline.settings import Settings
from pipeline.store.llm_limits import LLMLimits, provider_id

log = logging.getLogger(__name__)

OPENAI_URL = "https://api.openai.com/v1"
#: tokens of a chunk repeated at the start of the next, so a fact on the boundary is seen whole once
_OVERLAP_TOKENS = 200
_decode_reply = msgspec.json.Decoder(ExtractionReply).decode
_decode_screening = msgspec.json.Decoder(ScreeningReply).decode
#: the first wait before asking again after a timeout, a connection error or a 5xx, doubled each time, at most
_BACKOFF_S, _MAX_BACKOFF_S = 0.5, 8.0
#: statuses besides 429 worth asking again (what the openai client itself retries)
_TRANSIENT = frozenset({408, 409})
ResponseFormat = ResponseFormatJSONSchema | ResponseFormatJSONObject


def chunks_of(document: Document, settings: Settings) -> list[str | None]:
    """The parts of ``document``'s full text that ``OpenAIExtractor.extract`` sends, one call each (with the title
    and abstract); ``[None]`` without full text: one call with the title and abstract alone."""
    if not document.full_text:
        return [None]
    starts = [s.start for s in document.sections]
    return list(split_by_section(document.full_text, starts, settings.llm_chunk_tokens, _OVERLAP_TOKENS))


class _Malformed(ValueError):
    """The reply was not the JSON asked for."""


Reply = TypeVar("Reply", ExtractionReply, ScreeningReply)


@dataclass
class _Answer(Generic[Reply]):
    """What asking the model gave: the parsed reply (None when it failed, and why) and what it cost."""

    value: Reply | None = None
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failure: str | None = "no reply"
    rate_limited: int = 0


class _Rejected(ValueError):
    """The server refused this request (context too long…): the document is skipped, the job goes on."""


class OpenAIExtractor:
    """Asks a chat model for rows with a quote per value; one call per chunk of the document.

    Every call goes through a ``Limiter``: as many at once as the process's AIMD window allows (at most
    ``LITMINER_LLM_CONCURRENCY``; every batch a worker runs shares one event loop, see
    ``WorkerRuntime.run_async``, one connection pool and this limiter), and all workers' calls within the
    provider's requests and tokens per minute. A 429 waits for the provider's Retry-After and asks again.

    ``adaptive=False`` is how extraction ran before: always ``LITMINER_LLM_CONCURRENCY`` calls at once, no shared
    window (a 429 still waits and asks again); benchmarks compare the two. ``window_s`` is how long the
    provider counts its limits over: a minute, shorter only against test stand-ins.
    """

    name = "openai"
    version = prompts.PROMPT_VERSION
    cached = True

    def __init__(self, settings: Settings, *, adaptive: bool = True, window_s: float = 60.0) -> None:
        self.settings = settings
        self.adaptive = adaptive
        self.window_s = window_s
        self.base_url = (settings.openai_base_url or OPENAI_URL).rstrip("/")
        self.provider = "openai" if urlsplit(self.base_url).hostname == "api.openai.com" else "openai-compatible"
        self.json_schema = True  # until the server says it does not support it
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: openai.AsyncOpenAI | None = None
        self._limiter: Limiter | None = None

    def info(self) -> ExtractorInfo:
        """Provider, base URL and model: always the configured endpoint, never another."""
        return ExtractorInfo(
            name=self.name, provider=self.provider, base_url=self.base_url, model=self.settings.llm_model
        )

    async def extract(self, query: str, schema: PreparedSchema, document: Document) -> Extraction:
        """Rows from every chunk of the document; a chunk answered badly twice gives up the document."""
        rows: list[ExtractedRow] = []
        total = Extraction()
        for chunk in chunks_of(document, self.settings):
            part = await self._extract_chunk(query, schema, document, chunk)
            total = Extraction(
                calls=total.calls + part.calls,
                prompt_tokens=total.prompt_tokens + part.prompt_tokens,
                completion_tokens=total.completion_tokens + part.completion_tokens,
                failure=total.failure or part.failure,
                response_format=part.response_format,
                rate_limited=total.rate_limited + part.rate_limited,
            )
            if part.failure:
                break
            rows += [row for row in part.rows if row not in rows]  # overlapping chunks restate rows
        return msgspec.structs.replace(total, rows=[] if total.failure else rows)

    async def screen(self, query: str, criteria: list[Criterion], documents: list[Document]) -> Screening:
        """One call for the batch: include or exclude each document, with a reason and a quote (title and
        abstract only). A reply malformed twice, or refused, leaves the batch unjudged (with the failure)."""
        messages = prompts.screening_messages(query, criteria, documents)
        answer = await self._ask(
            messages, lambda: prompts.screening_format(json_schema=self.json_schema), _screening, "screening"
        )
        return Screening(
            verdicts=answer.value.decisions if answer.value is not None else [],
            judged=answer.value is not None,
            calls=answer.calls,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            failure=answer.failure,
        )

    async def close(self) -> None:
        """Close the HTTP connection pool and the limiter's Redis connections."""
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._limiter is not None and self._limiter.shared is not None:
            await self._limiter.shared.close()
        self._limiter = None

    async def _extract_chunk(
        self, query: str, schema: PreparedSchema, document: Document, chunk: str | None
    ) -> Extraction:
        messages = prompts.messages(query, schema, document, chunk)
        answer = await self._ask(
            messages, lambda: prompts.response_format(schema, json_schema=self.json_schema), _rows, document.id
        )
        return Extraction(
            rows=answer.value.rows if answer.value is not None else [],
            calls=answer.calls,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            failure=answer.failure,
            response_format=self._format_name,
            rate_limited=answer.rate_limited,
        )

    async def _ask(
        self,
        messages: list[ChatCompletionMessageParam],
        reply_format: Callable[[], ResponseFormat],
        parse: Callable[[ChatCompletion], Reply],
        what: str,
    ) -> _Answer[Reply]:
        """The parsed reply, asking once more after a malformed one; a request the server rejects is not
        asked again. Calls and tokens are counted either way."""
        answer: _Answer[Reply] = _Answer()
        for _attempt in range(2):
            try:
                completion = await self._complete(messages, reply_format(), answer)
            except _Rejected as exc:
                answer.failure = str(exc)
                break
            answer.calls += 1
            if completion.usage is not None:
                answer.prompt_tokens += completion.usage.prompt_tokens
                answer.completion_tokens += completion.usage.completion_tokens
            try:
                answer.value, answer.failure = parse(completion), None
                break
            except _Malformed as exc:
                log.warning("malformed reply (%s): %s", what, exc)
                answer.failure = f"malformed reply twice ({exc})"
        return answer

    @property
    def _format_name(self) -> str:
        return "json_schema" if self.json_schema else "json_object"

    async def _complete(
        self, messages: list[ChatCompletionMessageParam], response_format: ResponseFormat, answer: _Answer[Reply]
    ) -> ChatCompletion:
        """The completion, asked within the limiter: a 429 is waited out and asked again however often it comes
        (counted in ``answer``); a timeout, connection error or 5xx is asked again up to ``LITMINER_LLM_RETRIES``
        times with exponential backoff, then raises ``ExtractionError``."""
        client, limiter = self._connection()
        failures = 0
        while True:
            async with limiter.call(request_tokens(messages, response_format)) as ticket:
                try:
                    raw = await client.chat.completions.with_raw_response.create(
                        model=self.settings.llm_model,
                        messages=messages,
                        response_format=response_format,
                        temperature=0,
                    )
                    completion = raw.parse()
                except openai.RateLimitError as exc:
                    self._refused_for_good(exc)
                    answer.rate_limited += 1
                    await limiter.rate_limited(ticket, exc.response.headers)
                    continue
                except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                    if response_format["type"] == "json_schema" and _about_response_format(exc):
                        log.warning("%s rejects json_schema; using JSON mode plus validation", self.base_url)
                        self.json_schema = False
                        response_format = {"type": "json_object"}
                        continue
                    raise _Rejected(f"rejected by the server (HTTP {exc.status_code}): {_error_message(exc)}") from exc
                except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as exc:
                    raise self._refused(exc) from exc
                except (openai.APIConnectionError, openai.APIStatusError) as exc:  # timeouts included
                    status = exc.status_code if isinstance(exc, openai.APIStatusError) else None
                    transient = status is None or status >= 500 or status in _TRANSIENT
                    if not transient or failures >= self.settings.llm_retries:
                        raise ExtractionError(f"{self.provider} at {self.base_url} failed: {exc}") from exc
                    failures += 1
                    if isinstance(exc, openai.APITimeoutError):
                        limiter.timed_out(ticket)
                    log.warning(
                        "%s failed (%s); asking again (%d)", self.base_url, exc, failures, extra={"stage": "extraction"}
                    )
                except openai.APIError as exc:  # a reply the client could not read
                    raise ExtractionError(f"{self.provider} at {self.base_url} failed: {exc}") from exc
                else:
                    usage = completion.usage
                    await limiter.succeeded(ticket, raw.headers, usage.total_tokens if usage is not None else None)
                    return completion
            backoff_s = min(_BACKOFF_S * 2 ** (failures - 1), _MAX_BACKOFF_S)
            await asyncio.sleep(backoff_s * random.uniform(0.75, 1.0))

    def _refused(self, exc: openai.APIStatusError) -> ExtractorRefused:
        return ExtractorRefused(
            f"{self.provider} at {self.base_url} refused model {self.settings.llm_model!r} "
            f"(HTTP {exc.status_code}): {_error_message(exc)}"
        )

    def _refused_for_good(self, exc: openai.RateLimitError) -> None:
        """Raise for a 429 that waiting cannot cure: no quota left (the job ends), or a request larger than the
        tokens per minute (the document is skipped)."""
        if exc.code == "insufficient_quota":
            raise self._refused(exc) from exc
        if _error_message(exc).lower().startswith("request too large"):
            raise _Rejected(f"rejected by the server (HTTP 429): {_error_message(exc)}") from exc

    def _connection(self) -> tuple[openai.AsyncOpenAI, Limiter]:
        """The client and limiter of the running loop (made again if a new loop runs us)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._limiter is None or self._loop is not loop:
            self._loop = loop
            self._client = openai.AsyncOpenAI(
                api_key=self.settings.openai_api_key or "unused",  # local servers often need none
                base_url=self.base_url,  # explicit: the client would otherwise read OPENAI_BASE_URL itself
                timeout=self.settings.llm_timeout_s,
                max_retries=0,  # retries are ours: a 429 must come back to the limiter
            )
            shared = LLMLimits.connect(self.settings, window_ms=round(self.window_s * 1000)) if self.adaptive else None
            self._limiter = Limiter(
                shared,
                provider_id(self.base_url, self.settings.llm_model),
                f"{self.provider} at {self.base_url} ({self.settings.llm_model})",
                ceiling=self.settings.llm_concurrency,
                adaptive=self.adaptive,
            )
        return self._client, self._limiter


def _rows(completion: ChatCompletion) -> ExtractionReply:
    return _decoded(completion, _decode_reply)


def _screening(completion: ChatCompletion) -> ScreeningReply:
    return _decoded(completion, _decode_screening)


def _decoded(completion: ChatCompletion, decode: Callable[[str], Reply]) -> Reply:
    """The reply decoded into its Struct; ``_Malformed`` when it is not the JSON asked for."""
    try:
        return decode(_content(completion))
    except msgspec.DecodeError as exc:  # also covers ValidationError
        cut = completion.choices[0].finish_reason == "length"
        raise _Malformed("cut off at the token limit" if cut else str(exc)) from None


def _content(completion: ChatCompletion) -> str:
    """The reply's text without a Markdown code fence; ``_Malformed`` when there is none."""
    if not completion.choices:
        raise _Malformed("no choices")
    choice = completion.choices[0]
    content = choice.message.content
    if not content:
        raise _Malformed(choice.message.refusal or f"empty content (finish_reason {choice.finish_reason})")
    return content.strip().removeprefix("```json").removeprefix("```").removesuffix("```")


def _about_response_format(exc: openai.APIStatusError) -> bool:
    text = _error_message(exc).lower()
    return "response_format" in text or "json_schema" in text


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        message = body.get("message") or body.get("error")
        if isinstance(message, str):
            return message
    return exc.message
