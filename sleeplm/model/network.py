"""The SleepLM network: a CoCa-style sleep-language model for 30-s polysomnography epochs.

SleepLM (yang-ai-lab, "SleepLM: Natural-Language Intelligence for Human Sleep"; code and weights
github.com/yang-ai-lab/SleepLM, huggingface.co/yang-ai-lab/SleepLM-Base, MIT) pairs a biosignal
encoder with CLIP text towers in open_clip's CoCa design (`BiosignalsCoCa`):

    signals [B,10,1920] -> BiosignalEncoder -> latent [B,E] (retrieval) + memory [B,M,D] (captions)
    token ids [B,L]     -> TextTransformer  -> latent [B,E] (retrieval) + token features [B,L,D]
    condition + tokens  -> MultimodalDecoder (cross-attends to memory) -> logits [B,L,vocab]

The caption modality (brain, cardiac, respiratory, position/muscle, stage/event) is a learned
condition embedding placed before the text tokens. Module and parameter names follow the
reference so that its checkpoint loads with `strict=True`; ARCH.md describes every detail.
This file is inference-oriented: dropout is omitted (the reference only uses it in training),
and the text tower and decoder can run incrementally with a key/value cache (`DecodingState`).

Notation in shape comments: B batch, C signal channels, T patches per channel, D width,
H heads, L text length, P condition (prefix) tokens, M memory tokens, E joint embedding, V vocab.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sleeplm.model.config import SleepLMConfig
from sleeplm.errors import SleepLMRequestError

__all__ = ["build_model", "SleepLMModel", "DecodingState", "SleepLMRequestError", "SOT_TOKEN_ID", "EOT_TOKEN_ID",
           "PAD_TOKEN_ID"]

SOT_TOKEN_ID = 49406
EOT_TOKEN_ID = 49407
PAD_TOKEN_ID = 0


# ----------------------------------------------------------------------------- building blocks
class RMSNorm(nn.Module):
    """Root-mean-square norm (weight only), computed in fp32."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


class RotaryEmbedding(nn.Module):
    """Rotary position embedding over interleaved pairs (2i, 2i+1) of each head.

    Positions are the sequence indices 0..n-1. Temporal attention uses the fixed
    frequencies 10000^(-2i/head_dim) (a persistent buffer, as in the checkpoint); channel
    attention learns its frequencies (a parameter, initialised near zero).
    """

    def __init__(self, head_dim: int, learnable: bool, base: float = 10000.0):
        super().__init__()
        if learnable:
            self.freqs = nn.Parameter(torch.randn(head_dim // 2) * 0.02)
        else:
            self.register_buffer("freqs", 1.0 / base ** (torch.arange(0, head_dim, 2).float() / head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [..., n, head_dim]
        positions = torch.arange(x.shape[-2], device=x.device, dtype=self.freqs.dtype)
        angles = positions[:, None] * self.freqs[None, :]  # [n, head_dim/2]
        # A pair (x[2i], x[2i+1]) is the complex number x[2i] + i*x[2i+1]; rotating it is one complex product.
        rotation = torch.polar(torch.ones_like(angles), angles)
        pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2).contiguous())
        return torch.view_as_real(pairs * rotation).flatten(-2).to(x.dtype)


class DualRoPEAttention(nn.Module):
    """Multi-head self-attention with rotary positions (bias-free q/k/v, biased output)."""

    def __init__(self, dim: int, heads: int, rotary_emb: RotaryEmbedding):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.out_proj = nn.Linear(dim, dim)
        self.rotary_emb = rotary_emb  # may be shared by several blocks (tied channel RoPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, n, D] -> [N, n, D]
        N, n, D = x.shape
        q, k, v = (proj(x).view(N, n, self.heads, D // self.heads).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))  # [N, H, n, hd]
        q, k = self.rotary_emb(q), self.rotary_emb(k)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(N, n, D))


class SwiGLU(nn.Module):
    """down(silu(w1 x) * w2 x), no biases (`gate_proj.w1`, `gate_proj.w2`, `down_proj`)."""

    def __init__(self, dim: int, hidden: int, bias: bool = False):
        super().__init__()
        self.gate_proj = nn.ModuleDict({"w1": nn.Linear(dim, hidden, bias=bias), "w2": nn.Linear(dim, hidden, bias=bias)})
        self.down_proj = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj["w1"](x)) * self.gate_proj["w2"](x))


class DualTransformerBlock(nn.Module):
    """Post-norm block: attention across the C channels of each patch, then along the T patches of each channel."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int, num_temporal_layers: int,
                 channel_rope: RotaryEmbedding, mlp_bias: bool):
        super().__init__()
        head_dim = dim // heads
        self.channel_attention = DualRoPEAttention(dim, heads, channel_rope)
        self.channel_norm = RMSNorm(dim)
        self.temporal_attention_layers = nn.ModuleList(
            DualRoPEAttention(dim, heads, RotaryEmbedding(head_dim, learnable=False)) for _ in range(num_temporal_layers))
        self.temporal_norms = nn.ModuleList(RMSNorm(dim) for _ in range(num_temporal_layers))
        self.channel_mlp = SwiGLU(dim, mlp_hidden, mlp_bias)
        self.temporal_mlps = nn.ModuleList(SwiGLU(dim, mlp_hidden, mlp_bias) for _ in range(num_temporal_layers))
        self.channel_mlp_norm = RMSNorm(dim)
        self.temporal_mlp_norms = nn.ModuleList(RMSNorm(dim) for _ in range(num_temporal_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T, D]
        B, C, T, D = x.shape
        h = x.transpose(1, 2).reshape(B * T, C, D)  # one sequence of C channel tokens per patch
        h = self.channel_norm(h + self.channel_attention(h))
        h = self.channel_mlp_norm(h + self.channel_mlp(h))
        h = h.view(B, T, C, D).transpose(1, 2).reshape(B * C, T, D)  # one sequence of T patches per channel
        for attn, norm, mlp, mlp_norm in zip(self.temporal_attention_layers, self.temporal_norms,
                                             self.temporal_mlps, self.temporal_mlp_norms):
            h = norm(h + attn(h))
            h = mlp_norm(h + mlp(h))
        return h.view(B, C, T, D)


class KVCache:
    """Keys/values [B, H, capacity, hd] of one self-attention layer, grown by doubling up to `max_len`.

    Captions are usually far shorter than the 256-token limit, so memory is reserved as they grow.
    """

    def __init__(self, batch: int, heads: int, max_len: int, head_dim: int, like: torch.Tensor):
        self.max_len = max_len
        capacity = min(max_len, 64)
        self.k = like.new_empty(batch, heads, capacity, head_dim)
        self.v = like.new_empty(batch, heads, capacity, head_dim)
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = k.shape[2]
        if self.length + n > self.k.shape[2]:
            capacity = min(self.max_len, max(2 * self.k.shape[2], self.length + n))
            grown_k = self.k.new_empty(*self.k.shape[:2], capacity, self.k.shape[3])
            grown_v = torch.empty_like(grown_k)
            grown_k[:, :, : self.length] = self.k[:, :, : self.length]
            grown_v[:, :, : self.length] = self.v[:, :, : self.length]
            self.k, self.v = grown_k, grown_v
        self.k[:, :, self.length : self.length + n] = k
        self.v[:, :, self.length : self.length + n] = v
        self.length += n
        return self.k[:, :, : self.length], self.v[:, :, : self.length]

    def select(self, rows: torch.Tensor) -> None:
        self.k, self.v = self.k[rows], self.v[rows]


class MultiheadAttention(nn.Module):
    """Attention with nn.MultiheadAttention's packed parameters (`in_proj_weight` rows [q; k; v]).

    Written out (instead of using nn.MultiheadAttention) so that self-attention can append to a
    `KVCache` and cross-attention can reuse keys/values projected once per epoch.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:  # [B, n, D] -> [B, H, n, hd]
        B, n, D = x.shape
        return x.view(B, n, self.heads, D // self.heads).transpose(1, 2)

    def project_kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        D = x.shape[-1]
        k, v = F.linear(x, self.in_proj_weight[D:], self.in_proj_bias[D:]).chunk(2, dim=-1)
        return self._split_heads(k), self._split_heads(v)

    def forward(self, query: torch.Tensor, key_value: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                cache: KVCache | None = None, kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """query [B, n, D]; keys/values from `key_value`, or precomputed `kv`; `cache` appends them first."""
        B, n, D = query.shape
        q = self._split_heads(F.linear(query, self.in_proj_weight[:D], self.in_proj_bias[:D]))
        k, v = kv if kv is not None else self.project_kv(query if key_value is None else key_value)
        if cache is not None:
            k, v = cache.append(k, v)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, n, hd]
        return self.out_proj(out.transpose(1, 2).reshape(B, n, D))


class AttentionPool(nn.Module):
    """CoCa attentional pooler: learned query tokens attend over the signal tokens."""

    def __init__(self, dim: int, heads: int, n_queries: int):
        super().__init__()
        self.query_tokens = nn.Parameter(torch.randn(1, n_queries, dim) * 0.02)
        self.attn = MultiheadAttention(dim, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, N, D] -> [B, n_queries, D]
        return self.attn(self.query_tokens.expand(x.shape[0], -1, -1), x)


class Patching(nn.Module):
    """One Conv1d applied to every channel alone: [B, C, S] -> [B, C, T, conv_dim], T = S // patch.

    Samples after the last whole patch are dropped, as by the reference's stride-`patch` convolution.
    """

    def __init__(self, patch_size: int, conv_dim: int):
        super().__init__()
        self.conv_patching = nn.Conv1d(1, conv_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, S = x.shape
        patches = self.conv_patching(x.reshape(B * C, 1, S))  # [B*C, conv_dim, T]
        return patches.view(B, C, patches.shape[1], -1).transpose(2, 3)


# ----------------------------------------------------------------------------- biosignal tower
class BiosignalEncoder(nn.Module):
    """[B, C, S] epochs -> (latent [B, E] un-normalised, memory [B, M, D] for the caption decoder)."""

    def __init__(self, cfg: SleepLMConfig):
        super().__init__()
        bio, D = cfg.biosignals, cfg.biosignals.transformer_width
        head_dim = D // bio.transformer_heads
        self.proj_to_embed = nn.Linear(D, cfg.embed_dim)
        self.attn_pool = MultiheadAttention(D, bio.transformer_heads)
        self.patching = Patching(bio.patch_size, bio.conv_embed_dim)
        self.embed_projection = nn.Linear(bio.conv_embed_dim, D)
        self.channel_id_embed = nn.Embedding(bio.input_channels, D)
        if bio.share_channel_rope:
            # One learnable channel RoPE used by every block; the state dict lists it under 1 + layers names.
            self.shared_channel_rope = RotaryEmbedding(head_dim, learnable=True)
        self.transformer_blocks = nn.ModuleList(
            DualTransformerBlock(D, bio.transformer_heads, int(D * bio.mlp_ratio), bio.num_temporal_layers,
                                 self.shared_channel_rope if bio.share_channel_rope
                                 else RotaryEmbedding(head_dim, learnable=True), bio.mlp_bias)
            for _ in range(bio.transformer_layers))
        self.ln_final = RMSNorm(D)
        self.contrastive_pooler = AttentionPool(D, bio.transformer_heads, 1)
        self.decoder_pooler = AttentionPool(D, bio.transformer_heads, bio.decoder_tokens)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.embed_projection(self.patching(x))  # [B, C, T, D]
        h = h + self.channel_id_embed.weight[None, :, None, :]  # channel identity; time is only in RoPE
        for block in self.transformer_blocks:
            h = block(h)
        tokens = self.ln_final(h).flatten(1, 2)  # [B, C*T, D]
        global_token = self.contrastive_pooler(tokens)  # [B, 1, D]
        memory = self.decoder_pooler(tokens)  # [B, M, D]
        pooled = self.attn_pool(global_token, memory)[:, 0]  # global token queries the memory tokens
        return self.proj_to_embed(pooled), memory


# ----------------------------------------------------------------------------- text towers
class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.c_fc = nn.Linear(dim, hidden)
        self.c_proj = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    """Pre-norm causal self-attention + GELU MLP (open_clip layout)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = MultiheadAttention(dim, heads)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask=mask, cache=cache)
        return x + self.mlp(self.ln_2(x))


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention from text to the signal memory (`ln_1_kv` normalises the memory) + MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = MultiheadAttention(dim, heads)
        self.ln_1_kv = nn.LayerNorm(dim)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.attn.project_kv(self.ln_1_kv(memory))

    def forward(self, x: torch.Tensor, memory_kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), kv=memory_kv)
        return x + self.mlp(self.ln_2(x))


class ResidualStack(nn.Module):
    def __init__(self, dim: int, heads: int, layers: int, mlp_ratio: float):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(dim, heads, mlp_ratio) for _ in range(layers))


class TextTransformer(nn.Module):
    """CLIP text tower with a CLS token appended after the text (CoCa).

    Attention mask = causal + open_clip's legacy CoCa padding term: key 0 is always visible and
    key j >= 1 is visible iff ids[j-1] != 0. So the first padding position stays visible, the CLS
    key hides when the last id is padding, and a real "!" (id 0) hides the key after it.
    """

    def __init__(self, cfg: SleepLMConfig):
        super().__init__()
        t = cfg.text
        self.context_length = t.context_length
        self.cls_emb = nn.Parameter(torch.randn(t.width) * 0.02)
        self.positional_embedding = nn.Parameter(torch.randn(t.context_length + 1, t.width) * 0.01)
        self.text_projection = nn.Parameter(torch.randn(t.width, cfg.embed_dim) * t.width**-0.5)
        self.token_embedding = nn.Embedding(t.vocab_size, t.width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.transformer = ResidualStack(t.width, t.heads, t.layers, t.mlp_ratio)
        self.ln_final = nn.LayerNorm(t.width)
        n = t.context_length + 1
        self.register_buffer("attn_mask", torch.full((n, n), float("-inf")).triu(1), persistent=False)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids [B, L] -> (latent [B, E] un-normalised, token features [B, L, D] before ln_final)."""
        B, L = ids.shape
        x = torch.cat([self.token_embedding(ids), self.cls_emb.expand(B, 1, -1)], dim=1)
        x = x + self.positional_embedding[: L + 1]  # [B, L+1, D]
        key_visible = torch.cat([ids.new_ones(B, 1, dtype=torch.bool), ids != PAD_TOKEN_ID], dim=1)
        padding = torch.zeros(B, 1, 1, L + 1, dtype=x.dtype, device=x.device).masked_fill(
            ~key_visible[:, None, None, :], float("-inf"))
        mask = self.attn_mask[: L + 1, : L + 1] + padding  # [B, 1, L+1, L+1]
        for block in self.transformer.resblocks:
            x = block(x, mask=mask)
        latent = self.ln_final(x[:, -1]) @ self.text_projection
        return latent, x[:, :-1]


class MultimodalDecoder(nn.Module):
    """Caption decoder: [condition; text features] -> causal self-attn + cross-attn to memory -> logits.

    Condition (prefix) tokens see each other only; text tokens see every condition token and
    the earlier text. Blocked entries hold -float32 max, like the reference.
    """

    def __init__(self, cfg: SleepLMConfig):
        super().__init__()
        m = cfg.multimodal
        self.prefix_len = cfg.prefix_len
        self.text_projection = nn.Parameter(torch.randn(m.width, cfg.text.vocab_size) * m.width**-0.5)
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(m.width, m.heads, m.mlp_ratio) for _ in range(m.layers))
        self.cross_attn = nn.ModuleList(CrossAttentionBlock(m.width, m.heads, m.mlp_ratio) for _ in range(m.layers))
        self.ln_final = nn.LayerNorm(m.width)
        n, P = cfg.prefix_len + m.context_length, cfg.prefix_len
        query, key = torch.arange(n)[:, None], torch.arange(n)[None, :]
        visible = (key < P) | ((query >= P) & (key <= query))
        blocked = torch.full((n, n), torch.finfo(torch.float32).min)
        self.register_buffer("prefix_causal_mask", torch.where(visible, 0.0, blocked), persistent=False)

    def forward(self, memory: torch.Tensor, tokens: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        """memory [B, M, D], tokens [B, L, D], condition [B, c, D] or None -> logits [B, L, V]."""
        c = 0 if condition is None else condition.shape[1]
        x = tokens if condition is None else torch.cat([condition, tokens], dim=1)
        start = self.prefix_len - c  # fewer condition tokens use the end of the prefix block
        mask = self.prefix_causal_mask[start : start + x.shape[1], start : start + x.shape[1]]
        for block, cross in zip(self.resblocks, self.cross_attn):
            x = cross(block(x, mask=mask), cross.memory_kv(memory))
        return self.ln_final(x[:, c:]) @ self.text_projection


# ----------------------------------------------------------------------------- incremental decoding
class DecodingState:
    """Everything cached while captioning a batch of epochs token by token.

    Keys/values of the text tower and of the decoder's self-attention grow by one position per
    step; the cross-attention keys/values of the memory are computed once. `select(rows)` keeps
    (and reorders) batch rows: finished captions leave, beams are reordered.
    """

    def __init__(self, model: SleepLMModel, memory: torch.Tensor, condition: torch.Tensor | None, max_len: int):
        B, text, decoder = memory.shape[0], model.text, model.text_decoder
        cfg = model.config
        c = 0 if condition is None else condition.shape[1]
        self.text_caches = [KVCache(B, cfg.text.heads, max_len, cfg.text.width // cfg.text.heads, memory)
                            for _ in text.transformer.resblocks]
        self.decoder_caches = [KVCache(B, cfg.multimodal.heads, c + max_len, cfg.multimodal.width // cfg.multimodal.heads,
                                       memory) for _ in decoder.resblocks]
        self.memory_kv = [cross.memory_kv(memory) for cross in decoder.cross_attn]
        self.key_visible = torch.ones(B, max_len, dtype=torch.bool, device=memory.device)
        self.previous_ids: torch.Tensor | None = None
        self.length = 0  # text positions consumed
        if condition is not None:
            # Condition tokens attend only to each other, so they are decoded once, up front.
            x = condition
            for block, cross, cache, kv in zip(decoder.resblocks, decoder.cross_attn, self.decoder_caches, self.memory_kv):
                x = cross(block(x, cache=cache), kv)

    def select(self, rows: torch.Tensor) -> None:
        """Keep batch rows `rows` (in that order) of every cache.

        Examples
        --------
        >>> network = tiny_model().network
        >>> _, memory = network.biosignals(torch.as_tensor(tiny_recording().epochs[:3]))
        >>> state = network.start_decoding(memory, modality=0, max_len=4)
        >>> state.select(torch.tensor([2, 0]))                # row 1 finished; rows 2 and 0 go on
        >>> state.key_visible.shape[0], state.memory_kv[0][0].shape[0]
        (2, 2)
        """
        for cache in self.text_caches + self.decoder_caches:
            cache.select(rows)
        self.memory_kv = [(k[rows], v[rows]) for k, v in self.memory_kv]
        self.key_visible = self.key_visible[rows]
        if self.previous_ids is not None:
            self.previous_ids = self.previous_ids[rows]


# ----------------------------------------------------------------------------- the network
class SleepLMModel(nn.Module):
    """SleepLM (BiosignalsCoCa): biosignal encoder, text tower, modality-conditioned caption decoder."""

    def __init__(self, cfg: SleepLMConfig):
        super().__init__()
        self.config = cfg
        D = cfg.multimodal.width
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.channel_embeddings = nn.Parameter(torch.randn(cfg.num_caption_channels, D) * 0.02)
        self.padding_embedding = nn.Parameter(torch.randn(D) * 0.02)
        self.text = TextTransformer(cfg)
        self.biosignals = BiosignalEncoder(cfg)
        self.text_decoder = MultimodalDecoder(cfg)

    @property
    def context_length(self) -> int:
        return self.config.text.context_length

    def encode_signals(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Epochs [B, C, S] -> signal embeddings [B, E] (unit vectors unless normalize=False).

        Examples
        --------
        >>> network = tiny_model().network
        >>> with torch.no_grad():
        ...     embeddings = network.encode_signals(torch.as_tensor(tiny_recording().epochs[:2]))
        >>> tuple(embeddings.shape), embeddings.norm(dim=-1).round(decimals=3).tolist()
        ((2, 512), [1.0, 1.0])
        """
        latent, _ = self.biosignals(x)
        return F.normalize(latent, dim=-1) if normalize else latent

    def encode_text(self, token_ids: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Token ids [M, L] -> text embeddings [M, E] (unit vectors unless normalize=False).

        Examples
        --------
        >>> model = tiny_model()
        >>> with torch.no_grad():
        ...     embeddings = model.network.encode_text(model.tokenizer(["spindles", "rem"]))
        >>> tuple(embeddings.shape)
        (2, 512)
        """
        latent, _ = self.text(token_ids)
        return F.normalize(latent, dim=-1) if normalize else latent

    def condition(self, modality: int | None, batch: int) -> torch.Tensor | None:
        """Condition tokens [batch, prefix_len, D]: the modality's embedding, then padding embeddings.

        Examples
        --------
        >>> network = tiny_model().network
        >>> tuple(network.condition(1, batch=3).shape), network.condition(None, batch=3) is None   # prefix_len 2, width 32
        ((3, 2, 32), True)
        """
        if modality is None:
            return None
        if self.config.prefix_len == 0:
            raise SleepLMRequestError("This model has prefix_len 0: its captions take no modality; pass modality=None.")
        if not 0 <= int(modality) < self.channel_embeddings.shape[0]:
            raise SleepLMRequestError(f"modality id {modality} is outside 0..{self.channel_embeddings.shape[0] - 1}")
        tokens = [self.channel_embeddings[int(modality)]] + [self.padding_embedding] * (self.config.prefix_len - 1)
        return torch.stack(tokens).expand(batch, -1, -1)

    def logits_from_memory(self, memory: torch.Tensor, token_ids: torch.Tensor, modality: int | None) -> torch.Tensor:
        """Teacher-forced caption logits [B, L - 1, V]: at each position, the scores of the next token.

        Examples
        --------
        >>> model = tiny_model()
        >>> with torch.no_grad():
        ...     _, memory = model.network.biosignals(torch.as_tensor(tiny_recording().epochs[:2]))
        ...     logits = model.network.logits_from_memory(memory, model.tokenizer(["light sleep", "wake"]), modality=0)
        >>> tuple(logits.shape)                               # the tiny model's context: 64 tokens
        (2, 63, 49408)
        """
        _, tokens = self.text(token_ids)
        return self.text_decoder(memory, tokens[:, :-1], self.condition(modality, memory.shape[0]))

    def start_decoding(self, memory: torch.Tensor, modality: int | None, max_len: int) -> DecodingState:
        """A fresh cache for captions of up to `max_len` tokens (start token included).

        Examples
        --------
        >>> network = tiny_model().network
        >>> _, memory = network.biosignals(torch.as_tensor(tiny_recording().epochs[:2]))
        >>> state = network.start_decoding(memory, modality=2, max_len=16)
        >>> state.length, tuple(state.key_visible.shape)
        (0, (2, 16))
        """
        if not 1 <= max_len <= self.context_length:
            raise SleepLMRequestError(f"captions are limited to the context length {self.context_length} tokens "
                                      f"(start token included), not {max_len}")
        return DecodingState(self, memory, self.condition(modality, memory.shape[0]), max_len)

    def decode_step(self, state: DecodingState, ids: torch.Tensor) -> torch.Tensor:
        """Feed the next token of every row (ids [B]); logits [B, V] for the token after it.

        Examples
        --------
        >>> network = tiny_model().network
        >>> with torch.no_grad():
        ...     _, memory = network.biosignals(torch.as_tensor(tiny_recording().epochs[:2]))
        ...     state = network.start_decoding(memory, modality=0, max_len=4)
        ...     logits = network.decode_step(state, torch.full((2,), SOT_TOKEN_ID))
        >>> tuple(logits.shape), state.length                # one score per vocabulary id
        ((2, 49408), 1)
        """
        t = state.length
        if state.previous_ids is not None:
            # Legacy padding term: key t is hidden when the token before it is id 0.
            state.key_visible[:, t] = state.previous_ids != PAD_TOKEN_ID
        x = self.text.token_embedding(ids)[:, None] + self.text.positional_embedding[t]  # [B, 1, D]
        mask = state.key_visible[:, None, None, : t + 1]
        for block, cache in zip(self.text.transformer.resblocks, state.text_caches):
            x = block(x, mask=mask, cache=cache)
        # Text features skip the text tower's ln_final; the new token may see all cached positions.
        for block, cross, cache, kv in zip(self.text_decoder.resblocks, self.text_decoder.cross_attn,
                                           state.decoder_caches, state.memory_kv):
            x = cross(block(x, cache=cache), kv)
        state.length, state.previous_ids = t + 1, ids
        return self.text_decoder.ln_final(x[:, 0]) @ self.text_decoder.text_projection

    def generate_from_memory(self, memory: torch.Tensor, modality: int | None, max_new_tokens: int,
                             min_len: int = 16) -> torch.Tensor:
        """Greedy captions from signal tokens `memory` -> ids [B, <= 1 + max_new_tokens], start token first.

        End-of-text is banned while the length (start token included) is below `min_len`;
        a row stops at its first end-of-text (kept) and is padded with 0 after it. This equals
        the reference demo's 3-beam/3-group search (ARCH.md §7).

        Examples
        --------
        >>> network = tiny_model().network
        >>> with torch.no_grad():
        ...     _, memory = network.biosignals(torch.as_tensor(tiny_recording().epochs[:2]))
        ...     ids = network.generate_from_memory(memory, modality=0, max_new_tokens=5, min_len=6)
        >>> tuple(ids.shape), ids[:, 0].tolist()              # no end-of-text before 6 tokens: all 5 generated
        ((2, 6), [49406, 49406])
        """
        B = memory.shape[0]
        state = self.start_decoding(memory, modality, max_len=1 + max_new_tokens)
        out = torch.full((B, 1 + max_new_tokens), PAD_TOKEN_ID, dtype=torch.long, device=memory.device)
        out[:, 0] = SOT_TOKEN_ID
        rows = torch.arange(B, device=memory.device)  # rows still generating
        ids, length = out[:, 0], 1
        for step in range(max_new_tokens):
            logits = self.decode_step(state, ids)
            if step + 1 < min_len:
                logits[:, EOT_TOKEN_ID] = float("-inf")
            ids = logits.argmax(dim=-1)
            out[rows, step + 1] = ids
            length = step + 2
            running = ids != EOT_TOKEN_ID
            if not running.all():
                if not running.any():
                    break
                rows, ids = rows[running], ids[running]
                state.select(running.nonzero()[:, 0])
        return out[:, :length]


def build_model(config: dict[str, Any] | SleepLMConfig | str, **overrides: Any) -> SleepLMModel:
    """Build the SleepLM network from a reference-layout config dict, a `SleepLMConfig` or a packaged name.

    `overrides` replace top-level config keys, e.g. the released checkpoint's
    `build_model(get_model_config(), num_caption_channels=5, prefix_len=2)`. The network is
    returned in eval mode with freshly initialised weights; load a checkpoint to use it.

    Examples
    --------
    >>> network = build_model("sleeplm_tiny")
    >>> type(network).__name__, network.training, network.config.embed_dim
    ('SleepLMModel', False, 512)
    >>> from sleeplm.model.config import get_model_config
    >>> build_model(get_model_config("sleeplm_tiny"), prefix_len=2).config.prefix_len
    2
    """
    from sleeplm.model.config import get_model_config

    cfg = get_model_config(config, **overrides) if isinstance(config, str) else SleepLMConfig.from_dict(config, **overrides)
    return SleepLMModel(cfg).eval()
