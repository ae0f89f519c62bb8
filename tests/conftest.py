"""Shared fixtures: hand-built recordings, a short simulator night, a scripted chat model."""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterator

import numpy as np
import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from sleeplm.recording import CANONICAL_CHANNELS, EPOCH_SAMPLES, ChannelInfo, Recording

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def bare_recording() -> Callable[..., Recording]:
    """Factory of a signal-free Recording with a given length and start clock (time tests)."""

    def make(n_epochs: int = 120, start_seconds: float | None = 23 * 3600.0) -> Recording:
        return Recording(
            epochs=np.zeros((n_epochs, len(CANONICAL_CHANNELS), EPOCH_SAMPLES), dtype=np.float32),
            channel_present=np.zeros(len(CANONICAL_CHANNELS), dtype=bool),
            channels=[ChannelInfo(canonical=name, present=False) for name in CANONICAL_CHANNELS],
            signals={},
            start_seconds=start_seconds,
            normalization="night_robust",
            position_map=None,
            reference=None,
            source_format="tensor",
            content_hash="0" * 64,
        )

    return make


Script = AIMessage | str | Callable[[list[BaseMessage]], AIMessage | str]


class ScriptedChatModel(GenericFakeChatModel):
    """Replays scripted replies; a reply may be a function of the messages it receives.

    Tools are accepted and ignored (`bind_tools` returns the model itself), every message
    list it is called with is kept in `seen` (a spy for privacy tests), and streaming yields
    the reply's words one by one with its tool calls in the last chunk.
    """

    seen: list[list[BaseMessage]] = []
    tools_offered: list[int] = []

    def bind_tools(self, tools, **kwargs):
        self.tools_offered.append(len(tools))
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        self.seen.append(list(messages))
        reply = next(self.messages)
        if callable(reply):
            reply = reply(messages)
        message = AIMessage(content=reply) if isinstance(reply, str) else reply
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(self, messages, stop=None, run_manager=None, **kwargs) -> Iterator[ChatGenerationChunk]:
        message = self._generate(messages).generations[0].message
        words = message.content.split(" ") if message.content else [""]
        for i, word in enumerate(words):
            last = i == len(words) - 1
            chunk = AIMessageChunk(
                content=word + ("" if last else " "),
                tool_call_chunks=[
                    {"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "index": k}
                    for k, c in enumerate(message.tool_calls)
                ]
                if last
                else [],
            )
            if run_manager and chunk.content:
                run_manager.on_llm_new_token(chunk.content, chunk=ChatGenerationChunk(message=chunk))
            yield ChatGenerationChunk(message=chunk)


def call(name: str, call_id: str = "call_1", **args: Any) -> AIMessage:
    """A scripted reply that calls one tool."""
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": call_id, "type": "tool_call"}])


@pytest.fixture
def scripted_model() -> Callable[..., ScriptedChatModel]:
    """Factory: `scripted_model(reply1, reply2, ...)`, a fresh iterator and spy per call."""

    def make(*replies: Script) -> ScriptedChatModel:
        return ScriptedChatModel(messages=iter(replies), seen=[], tools_offered=[])

    return make
