"""Typed SleepLM model configurations, read from the JSON files in `sleeplm/model_configs/`.

The JSON layout is the reference repository's (`embed_dim`, `biosignals_cfg`, `text_cfg`,
`multimodal_cfg`, `prefix_len`, `num_caption_channels`), and a missing key takes the reference's
default (open_clip's CLIPTextCfg/MultimodalCfg, SleepLM's BiosignalsCfg, prefix_len 0). Keys that
do not change the inference network (`custom_text`, `sampling_rate`, `dropout`...) are accepted
and ignored, so the reference file ships unchanged; reference options that would build another
network (layer scale, a conv_transformer encoder, a concat decoder...) are a clear error.

The released checkpoint was trained with 5 caption channels and a prefix of 2 condition
tokens, which the demo passes as overrides of the JSON's 12 / 1 (ARCH.md §0):
`get_model_config("sleep_coca_base_dualtransformer", **RELEASED_OVERRIDES)`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from importlib import resources
from typing import Any

from sleeplm.errors import CheckpointError

__all__ = [
    "BiosignalsConfig",
    "TextConfig",
    "MultimodalConfig",
    "SleepLMConfig",
    "list_models",
    "get_model_config",
    "DEFAULT_MODEL",
    "TINY_MODEL",
    "RELEASED_OVERRIDES",
]

DEFAULT_MODEL = "sleep_coca_base_dualtransformer"
TINY_MODEL = "sleeplm_tiny"
RELEASED_OVERRIDES = {"num_caption_channels": 5, "prefix_len": 2}


# Reference config options (open_clip CLIPTextCfg/MultimodalCfg, BiosignalsCfg, BiosignalsCoCa arguments)
# that change the network, with the only value implemented here; their defaults are the reference's.
_TEXT_OPTIONS = (("ls_init_value", None), ("pad_id", 0), ("no_causal_mask", False), ("final_ln_after_pool", False),
                 ("proj_bias", False), ("proj_type", "linear"), ("hf_model_name", None), ("act_kwargs", None),
                 ("norm_kwargs", None), ("qk_norm", False), ("scaled_cosine_attn", False), ("scale_heads", False),
                 ("scale_attn_inner", False), ("scale_attn", False), ("scale_fc", False))
_UNSUPPORTED_OPTIONS = (
    *((section, key, value) for section in ("text_cfg", "multimodal_cfg") for key, value in _TEXT_OPTIONS),
    ("", "decoder_type", "cross_attention"), ("", "quick_gelu", False), ("", "init_logit_bias", None),
    ("", "nonscalar_logit_scale", False), ("", "use_signal_decoder", False), ("", "pad_id", 0),
)


def _known_fields(cls, raw: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in raw.items() if k in names}


@dataclass(frozen=True)
class BiosignalsConfig:
    """Biosignal encoder: channel patches -> dual (channel x time) RoPE transformer -> attention pools."""

    architecture: str = "conv_transformer"  # the reference's default; only "pure_transformer" is SleepLM's
    input_channels: int = 12
    signal_length: int = 1000  # samples per epoch (the released model: 1920, 30 s at 64 Hz)
    patch_size: int = 32  # samples per patch
    conv_embed_dim: int = 256
    transformer_width: int = 768
    transformer_heads: int = 12
    transformer_layers: int = 6
    num_temporal_layers: int = 2
    mlp_ratio: float = 4.0
    decoder_tokens: int = 32
    activation: str = "swiglu"
    norm_type: str = "rmsnorm"
    pool_type: str = "attn"
    mlp_bias: bool = False
    share_channel_rope: bool = True


@dataclass(frozen=True)
class _TokenTowerConfig:
    """The settings the two token transformers share (open_clip's MultimodalCfg extends CLIPTextCfg)."""

    context_length: int = 77  # tokens, including the start and end tokens
    width: int = 512
    heads: int = 8
    layers: int = 12
    mlp_ratio: float = 4.0


@dataclass(frozen=True)
class TextConfig(_TokenTowerConfig):
    """Text tower (open_clip TextTransformer with an appended CLS token)."""

    vocab_size: int = 49408
    embed_cls: bool = False


@dataclass(frozen=True)
class MultimodalConfig(_TokenTowerConfig):
    """Captioning decoder: causal self-attention + cross-attention to the signal tokens."""


@dataclass(frozen=True)
class SleepLMConfig:
    """The whole network. `prefix_len` condition tokens select the caption modality (0: captions unconditioned)."""

    embed_dim: int = 512
    biosignals: BiosignalsConfig = field(default_factory=BiosignalsConfig)
    text: TextConfig = field(default_factory=TextConfig)
    multimodal: MultimodalConfig = field(default_factory=MultimodalConfig)
    prefix_len: int = 0
    num_caption_channels: int = 12

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | SleepLMConfig, **overrides: Any) -> SleepLMConfig:
        """Build from the reference JSON layout; `overrides` replace top-level keys (e.g. `prefix_len=2`).

        Examples
        --------
        >>> config = SleepLMConfig.from_dict(get_model_config("sleeplm_tiny"), prefix_len=2)
        >>> config.prefix_len, config.text.width, config.multimodal.width
        (2, 32, 32)
        >>> SleepLMConfig.from_dict({"text_cfg": {"qk_norm": True}})
        Traceback (most recent call last):
        ...
        sleeplm.errors.CheckpointError: Model config uses reference options this network does not implement: text_cfg.qk_norm=True. Only the SleepLM (BiosignalsCoCa pure_transformer, cross_attention decoder) settings are supported.
        """
        if isinstance(raw, SleepLMConfig):
            raw = raw.to_dict()
        if not isinstance(raw, dict):
            raise CheckpointError(f"A model config must be a dict or a model name, not {type(raw).__name__}.")
        top = {f.name for f in fields(cls)} - {"biosignals", "text", "multimodal"}
        unknown = set(overrides) - top
        if unknown:
            raise CheckpointError(f"Unknown model config override(s) {sorted(unknown)}; allowed: {sorted(top)}.")
        merged = {**raw, **overrides}
        unsupported = []
        for section, key, supported in _UNSUPPORTED_OPTIONS:
            value = (merged.get(section) or {} if section else merged).get(key, supported)
            if value != supported:
                unsupported.append(f"{section + '.' if section else ''}{key}={value!r}")
        if unsupported:
            raise CheckpointError(f"Model config uses reference options this network does not implement: "
                                  f"{', '.join(unsupported)}. Only the SleepLM (BiosignalsCoCa pure_transformer, "
                                  "cross_attention decoder) settings are supported.")
        config = cls(
            embed_dim=int(merged.get("embed_dim", 512)),
            biosignals=BiosignalsConfig(**_known_fields(BiosignalsConfig, merged.get("biosignals_cfg", {}))),
            text=TextConfig(**_known_fields(TextConfig, merged.get("text_cfg", {}))),
            multimodal=MultimodalConfig(**_known_fields(MultimodalConfig, merged.get("multimodal_cfg", {}))),
            prefix_len=int(merged.get("prefix_len", 0)),
            num_caption_channels=int(merged.get("num_caption_channels", 12)),
        )
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        """The reference JSON layout (round-trips through `from_dict`).

        Examples
        --------
        >>> config = SleepLMConfig.from_dict(get_model_config("sleeplm_tiny"))
        >>> layout = config.to_dict()
        >>> sorted(layout), SleepLMConfig.from_dict(layout) == config
        (['biosignals_cfg', 'embed_dim', 'multimodal_cfg', 'num_caption_channels', 'prefix_len', 'text_cfg'], True)
        """
        return {
            "embed_dim": self.embed_dim,
            "biosignals_cfg": dataclasses.asdict(self.biosignals),
            "text_cfg": dataclasses.asdict(self.text),
            "multimodal_cfg": dataclasses.asdict(self.multimodal),
            "prefix_len": self.prefix_len,
            "num_caption_channels": self.num_caption_channels,
        }

    def validate(self) -> None:
        """Raise `CheckpointError` for settings this network cannot be built with.

        Examples
        --------
        >>> import dataclasses
        >>> config = SleepLMConfig.from_dict(get_model_config("sleeplm_tiny"))
        >>> config.validate() is None                        # buildable: nothing raised
        True
        >>> dataclasses.replace(config, text=dataclasses.replace(config.text, heads=5)).validate()
        Traceback (most recent call last):
        ...
        sleeplm.errors.CheckpointError: Model config cannot be built: text width 32 is not divisible by its 5 heads.
        """
        bio, problems = self.biosignals, []
        if bio.patch_size > bio.signal_length:
            problems.append(f"patch_size {bio.patch_size} is longer than signal_length {bio.signal_length}")
        for name, width, heads in (
            ("biosignals", bio.transformer_width, bio.transformer_heads),
            ("text", self.text.width, self.text.heads),
            ("multimodal", self.multimodal.width, self.multimodal.heads),
        ):
            if width % heads:
                problems.append(f"{name} width {width} is not divisible by its {heads} heads")
        if (bio.transformer_width // max(bio.transformer_heads, 1)) % 2:
            problems.append("biosignal head size must be even for rotary position embeddings")
        if self.text.width != self.multimodal.width:
            problems.append("text and multimodal widths must be equal (the decoder reads text token features)")
        if self.multimodal.width != bio.transformer_width:
            problems.append("multimodal width must equal the biosignal width (cross-attention memory)")
        if bio.architecture != "pure_transformer":
            problems.append(f"biosignals architecture {bio.architecture!r} is not implemented (only 'pure_transformer')")
        if (bio.activation, bio.norm_type, bio.pool_type) != ("swiglu", "rmsnorm", "attn"):
            problems.append("only activation 'swiglu', norm_type 'rmsnorm' and pool_type 'attn' are implemented")
        if not self.text.embed_cls:
            problems.append("only text towers with embed_cls=true (CoCa) are implemented")
        if self.prefix_len < 0 or self.num_caption_channels < 1:
            problems.append("prefix_len must be at least 0 and num_caption_channels at least 1")
        if problems:
            raise CheckpointError("Model config cannot be built: " + "; ".join(problems) + ".")


def list_models() -> list[str]:
    """Names of the packaged model configs (JSON files in `sleeplm/model_configs/`).

    Examples
    --------
    >>> list_models()
    ['sleep_coca_base_dualtransformer', 'sleeplm_tiny']
    """
    folder = resources.files("sleeplm.model").joinpath("model_configs")
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def get_model_config(name: str = DEFAULT_MODEL, **overrides: Any) -> SleepLMConfig:
    """The packaged config `name` as a typed `SleepLMConfig`, with top-level `overrides` applied.

    Raises
    ------
    CheckpointError
        No packaged config of that name (the message lists the available ones).

    Examples
    --------
    >>> config = get_model_config(**RELEASED_OVERRIDES)      # the released checkpoint's shape
    >>> config.embed_dim, config.prefix_len, config.num_caption_channels
    (512, 2, 5)
    >>> get_model_config("sleeplm_huge")
    Traceback (most recent call last):
    ...
    sleeplm.errors.CheckpointError: ...
    """
    if name not in list_models():
        raise CheckpointError(f"No model config named {name!r}; available: {', '.join(list_models())}.")
    text = resources.files("sleeplm.model").joinpath("model_configs", f"{name}.json").read_text()
    return SleepLMConfig.from_dict(json.loads(text), **overrides)
