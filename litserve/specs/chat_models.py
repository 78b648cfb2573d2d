"""The chat-completions request and response bodies, as OpenAI's API reference defines them.

The request is validated in the app process, before any worker sees it, and again (the same model) in
the worker, where ``decode_request`` receives it. Bounds are OpenAI's (temperature 0..2, at most 4
stop sequences, n up to 128, ...). Unknown top-level fields are accepted and handed to the model in
its context, because servers of open models take sampling options OpenAI does not (``top_k``,
``repetition_penalty``) and clients send them with ``extra_body``.

The class names are LitServe's (``litserve.specs.openai`` re-exports them), so code importing
``ChatMessage`` or ``ChatCompletionRequest`` from there keeps working.
"""

from __future__ import annotations

import time
import uuid
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


class _Open(BaseModel):
    """Objects where OpenAI may add fields: accepted and kept."""

    model_config = ConfigDict(extra="allow")


# -- message content parts -------------------------------------------------------------------------------
class TextContent(_Open):
    type: Literal["text"] = "text"
    text: str


class ImageDetail(str, Enum):
    auto = "auto"
    low = "low"
    high = "high"


class ImageContentURL(_Open):
    url: str = Field(min_length=1)
    detail: ImageDetail = ImageDetail.auto


class ImageContent(_Open):
    type: Literal["image_url"] = "image_url"
    image_url: ImageContentURL | str  # LitServe also accepts the bare URL string


class InputAudio(_Open):
    data: str  # base64
    format: Literal["wav", "mp3"]


class AudioContent(_Open):
    type: Literal["input_audio"] = "input_audio"
    input_audio: InputAudio


class FileContent(_Open):
    type: Literal["file"] = "file"
    file: dict[str, Any]


class RefusalContent(_Open):
    type: Literal["refusal"] = "refusal"
    refusal: str


ContentPart = Annotated[
    TextContent | ImageContent | AudioContent | FileContent | RefusalContent, Field(discriminator="type")
]


# -- tools -----------------------------------------------------------------------------------------------
class Function(_Open):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Open):
    type: Literal["function"] = "function"
    function: Function


class FunctionName(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"] = "function"
    function: FunctionName


class ToolChoice(str, Enum):
    auto = "auto"
    none = "none"
    required = "required"
    any = "any"  # LitServe's spelling of "required"


class FunctionCall(BaseModel):
    name: str
    arguments: str


class ToolCall(BaseModel):
    index: int = 0
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


# -- response_format -------------------------------------------------------------------------------------
class ResponseFormatText(BaseModel):
    type: Literal["text"]


class ResponseFormatJSONObject(BaseModel):
    type: Literal["json_object"]


class JSONSchema(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = False


class ResponseFormatJSONSchema(BaseModel):
    type: Literal["json_schema"]
    json_schema: JSONSchema


ResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJSONObject | ResponseFormatJSONSchema, Field(discriminator="type")
]


class StreamOptions(BaseModel):
    include_usage: bool = False


# -- messages --------------------------------------------------------------------------------------------
class ChatMessage(_Open):
    """One message of the conversation (any role). ``content`` is a string or a list of parts."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _role_rules(self) -> ChatMessage:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a message with role 'tool' needs 'tool_call_id'")
        if self.role == "assistant":
            if self.content is None and not self.tool_calls:
                raise ValueError("an assistant message needs 'content' or 'tool_calls'")
        elif self.content is None:
            raise ValueError(f"a message with role {self.role!r} needs 'content'")
        return self


class ChatMessageWithUsage(ChatMessage):
    prompt_tokens: int | None = 0
    total_tokens: int | None = 0
    completion_tokens: int | None = 0


class ChoiceDelta(BaseModel):
    """What a stream chunk adds to a choice."""

    role: Literal["assistant", "tool", "system", "user"] | None = None
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    reasoning_content: str | None = None


# -- the request -----------------------------------------------------------------------------------------
class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``. ``model`` may be omitted (LitServe's default ``""``)."""

    model_config = ConfigDict(extra="allow")

    model: str = ""
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int = Field(1, ge=1, le=128)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    seed: int | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    tools: list[Tool] | None = Field(None, max_length=128)
    tool_choice: ToolChoice | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None:
            if len(value) > 16:
                raise ValueError("at most 16 metadata keys")
            for key, item in value.items():
                if len(key) > 64 or len(item) > 512:
                    raise ValueError("metadata keys are at most 64 characters and values at most 512")
        return value

    @model_validator(mode="after")
    def _cross_field(self) -> ChatCompletionRequest:
        if self.stream_options is not None and not self.stream:
            raise ValueError("'stream_options' is only allowed when 'stream' is true")
        if isinstance(self.tool_choice, NamedToolChoice):
            names = {t.function.name for t in self.tools or ()}
            if self.tool_choice.function.name not in names:
                raise ValueError(f"tool_choice names {self.tool_choice.function.name!r}, which is not in 'tools'")
        elif self.tool_choice in (ToolChoice.required, ToolChoice.any) and not self.tools:
            raise ValueError(f"tool_choice {self.tool_choice.value!r} needs 'tools'")
        return self

    def context(self) -> dict[str, Any]:
        """The request's fields other than the messages: what ``predict(x, context)`` receives."""
        data = self.model_dump(exclude={"messages"}, by_alias=True)
        return data


# -- the responses ---------------------------------------------------------------------------------------
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class UsageInfo(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: UsageInfo) -> UsageInfo:
        return UsageInfo(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
        )

    def __radd__(self, other: Any) -> UsageInfo:
        if other == 0:  # sum() starts from 0
            return self
        return self.__add__(other)


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    reasoning_content: str | None = None


class ChatCompletionResponseChoice(BaseModel):
    index: int
    message: ResponseMessage
    finish_reason: FinishReason | None = "stop"
    logprobs: dict[str, Any] | None = None


class ChatCompletionResponse(BaseModel):
    id: str = Field(default_factory=completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatCompletionResponseChoice]
    usage: UsageInfo


class ChatCompletionStreamingChoice(BaseModel):
    index: int
    delta: ChoiceDelta
    finish_reason: FinishReason | None = None
    logprobs: dict[str, Any] | None = None


class ChatCompletionChunk(BaseModel):
    id: str = Field(default_factory=completion_id)
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatCompletionStreamingChoice]
    usage: UsageInfo | None = None


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "litserve"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]
