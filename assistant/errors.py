"""Errors of the conversation layer.

Only `LLMBackendError` (the language model's own failure: connection, timeout, unparsable output)
leads to the labelled tool-only answer. Anything else raised while answering (by a tool, by the
middleware, by the session) is a bug: the session logs it with its traceback under a reference id
and the user sees "internal error" with that reference (`InternalError.user_message`).
"""

from __future__ import annotations

import uuid

from sleeplm.errors import CheckpointError, ModelUnavailableError, SleepLMError

__all__ = [
    "AssistantError", "SessionError", "LLMConfigError", "LocalModelUnavailable", "ModelChecksumError",
    "LLMBackendError", "InternalError",
]


class AssistantError(Exception):
    """Base class of the errors the conversation layer raises on purpose."""


class SessionError(SleepLMError, AssistantError):
    """A session used the wrong way (no recording loaded, unknown audience, empty question)."""


class LLMConfigError(SleepLMError, ValueError):
    """A backend spec or configuration file that cannot be understood."""


class LocalModelUnavailable(ModelUnavailableError):
    """The embedded model cannot run: llama-cpp-python or the model file is missing or unusable."""


class ModelChecksumError(CheckpointError):
    """A model file whose sha256 is not the published one (it has been deleted)."""


class LLMBackendError(AssistantError):
    """The language model backend failed while answering; the original exception is its ``__cause__``."""

    def describe(self) -> str:
        """``"ConnectionError: endpoint refused"``: what the backend raised, shortened for a user."""
        cause = self.__cause__ or self
        return f"{type(cause).__name__}: {str(cause)[:120]}"


class InternalError(AssistantError):
    """A bug met while answering, with the reference id it is logged under."""

    def __init__(self, reference: str | None = None) -> None:
        self.reference = reference or uuid.uuid4().hex[:8]
        super().__init__(self.user_message)

    @property
    def user_message(self) -> str:
        return (f"Internal error (reference {self.reference}): the assistant failed while answering. "
                "This is a bug, not a problem with your recording; the server log holds the details "
                "under this reference. Try asking differently.")
