"""The parts of OpenAI's Chat Completions and Models APIs this server reads and writes.

Requests accept the fields OpenAI's clients send and this server ignores (``temperature``,
``max_tokens``, ...): the team's own agents decide those. ``tools`` and ``functions`` are refused
(the router says so with a 400) until a client's tools can be called from a run.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        """The message's text; only text parts are understood."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(part.text or "" for part in self.content)

    def non_text(self) -> str | None:
        """The type of the first content part that is not text, if any."""
        if isinstance(self.content, list):
            return next((part.type for part in self.content if part.type != "text"), None)
        return None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionCreate(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(description="The team's name (or id), as `GET /openai/v1/models` lists it.")
    messages: list[ChatMessage] = Field(min_length=1, description="The conversation; the last is the user's turn.")
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    tools: list[Any] | None = Field(default=None, description="Not supported yet: refused with a 400.")
    functions: list[Any] | None = Field(default=None, description="Not supported: refused with a 400.")
    user: str | None = None
    include_reasoning: bool = Field(
        default=True,
        description="Stream the team's inner turns as `reasoning_content` (default); `false`: the answer alone.",
    )


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ChatCompletionMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    reasoning_content: str | None = None


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatCompletionMessage
    finish_reason: Literal["stop"] = "stop"


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: CompletionUsage


class InputItem(BaseModel):
    """An item of a Responses API ``input``: a message (``type: message``, or no type, as the SDKs
    send), or the ``function_call_output`` that answers a response's ``human_input`` call."""

    model_config = ConfigDict(extra="allow")

    type: str = "message"
    role: Literal["system", "developer", "user", "assistant"] | None = None
    content: str | list[TextPart] | None = None
    call_id: str | None = None
    output: str | list[TextPart] | None = None

    def output_text(self) -> str:
        """A ``function_call_output``'s output, its text parts joined."""
        if self.output is None or isinstance(self.output, str):
            return self.output or ""
        return "".join(part.text or "" for part in self.output)


class ResponseCreate(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(description="The team's name (or id), as `GET /openai/v1/models` lists it.")
    input: str | list[InputItem] = Field(
        description="The user's turn: text, or messages whose last is the user's; or the `function_call_output` "
        "answering the `human_input` call of `previous_response_id`."
    )
    instructions: str | None = Field(default=None, description="Put before the task, as a system message.")
    stream: bool | None = False
    background: bool | None = False
    previous_response_id: str | None = Field(default=None, description="Continue that response's conversation.")
    tools: list[Any] | None = Field(default=None, description="Not supported yet: refused with a 400.")
    include_reasoning: bool = Field(
        default=True, description="The team's inner turns as `reasoning` output items (default); `false`: left out."
    )
