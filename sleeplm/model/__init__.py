"""The SleepLM network: config factory, modules, checkpoint loading, tokenizer, inference and
the per-night embedding cache."""

from sleeplm.model.inference import SleepLM
from sleeplm.model.network import EOT_TOKEN_ID, SOT_TOKEN_ID, SleepLMModel, SleepLMRequestError, build_model

__all__ = ["EOT_TOKEN_ID", "SOT_TOKEN_ID", "SleepLM", "SleepLMModel", "SleepLMRequestError", "build_model"]
