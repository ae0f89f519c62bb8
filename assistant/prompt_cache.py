"""The embedded model's prompt-state cache (imported only where llama-cpp-python is installed)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_cpp import LlamaRAMCache


class PromptStateCache(LlamaRAMCache):
    """llama-cpp-python's RAM cache of prompt states, keeping only the newest state per system message.

    The agent's prompts come in a few kinds that differ from their system message on (tool choice
    with every tool or with one routed tool, the answer step per audience). The next prompt of a
    kind shares its longest prefix with the newest state of that kind, so an older state of the
    same kind is never the best match again and only holds memory: with one state per saved
    completion, the plain LRU cache filled its whole capacity within eight answers.

    Parameters
    ----------
    capacity_bytes : the cache's limit on the states' llama.cpp bytes (least recently used go first).
    end_of_message : the token that ends the system message (Qwen's ``<|im_end|>``).
    """

    def __init__(self, capacity_bytes: int, end_of_message: int) -> None:
        super().__init__(capacity_bytes=capacity_bytes)
        self.end_of_message = end_of_message

    def kind(self, key: Sequence[int]) -> tuple[int, ...]:
        """The tokens up to the end of the first message (the whole key when it has none)."""
        key = tuple(key)
        return key[: key.index(self.end_of_message) + 1] if self.end_of_message in key else key

    def __setitem__(self, key: Sequence[int], value: Any) -> None:
        kind = self.kind(key)
        for older in [k for k in self.cache_state if self.kind(k) == kind]:
            del self.cache_state[older]
        super().__setitem__(key, value)
