"""DIRformer: the Restormer-style U-net of DiffIR, conditioned on a per-image IPR vector.

Re-implemented from the description of the official DiffIR release (``S1_arch.py``) so that official
checkpoints load unchanged: every attribute name and the registration order of every parameter follows the
official module tree, because ``state_dict`` keys (``G.encoder_level1.0.attn.kernel.0.weight`` …) are derived
from them. The maths is the official one; only the plumbing differs (no einops, blocks take ``(x, ipr)``
instead of a ``[x, ipr]`` list).

Tensor layout is NCHW throughout. The IPR ("image prior representation") is a ``(B, ipr_dim)`` tensor shared by
every transformer block; each block owns two bias-free linear maps of it (one for attention, one for the FFN)
that produce a per-sample, per-channel scale and shift.
"""
from __future__ import annotations

import contextlib
from typing import Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from DiffIR.utils.errors import OptionError

__all__ = [
    "set_grad_checkpointing",
    "BiasFreeLayerNorm",
    "WithBiasLayerNorm",
    "LayerNorm",
    "Attention",
    "FeedForward",
    "TransformerBlock",
    "BlockStack",
    "OverlapPatchEmbed",
    "Downsample",
    "Upsample",
    "DIRformer",
    "check_spatial_multiple",
]

_LN_EPS = 1e-5


def check_spatial_multiple(x: torch.Tensor, multiple: int, name: str = "input") -> None:
    """Raise a readable ``ValueError`` unless ``x`` is 4-D with H and W divisible by ``multiple``.

    The U-net downsamples three times (×8) and the prior extractor pixel-unshuffles by 4, so other sizes
    fail deep inside with an unhelpful shape error; callers are expected to pad (e.g. reflect) and crop back.
    """
    if x.dim() != 4:
        raise ValueError(f"{name} must be a 4-D (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h % multiple or w % multiple:
        raise ValueError(
            f"{name} height and width must be multiples of {multiple}, got {h}x{w}; "
            f"pad the image (e.g. reflect-pad bottom/right to {-(-h // multiple) * multiple}x"
            f"{-(-w // multiple) * multiple}) and crop the output back"
        )


class BiasFreeLayerNorm(nn.Module):
    """Per-pixel channel norm without centring the output: ``x / sqrt(var_c(x) + eps) * weight``.

    The variance is still taken about the channel mean (as in the official code); only the subtraction of the
    mean from ``x`` and the bias are dropped. Input is NCHW; statistics run over C.
    """

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.var(dim=1, keepdim=True, unbiased=False)
        return x / torch.sqrt(var + _LN_EPS) * self.weight.view(1, -1, 1, 1)


class WithBiasLayerNorm(nn.Module):
    """Standard layer norm over the channels of each pixel (eps 1e-5), NCHW in and out.

    Implemented with ``F.layer_norm`` on a channels-last view, which is one fused kernel instead of the
    mean/var/subtract/divide chain; mathematically identical to the official (B, HW, C) formulation.
    """

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, _LN_EPS)
        return y.permute(0, 3, 1, 2)


class LayerNorm(nn.Module):
    """Wrapper that only exists so the parameters live under ``normX.body.*`` like the official keys."""

    def __init__(self, dim: int, layer_norm_type: str = "WithBias") -> None:
        super().__init__()
        if layer_norm_type == "BiasFree":
            self.body: nn.Module = BiasFreeLayerNorm(dim)
        elif layer_norm_type == "WithBias":
            self.body = WithBiasLayerNorm(dim)
        else:
            # The official code silently treats any other string as 'WithBias'; a typo should not pass silently.
            raise OptionError(f"LayerNorm_type must be 'WithBias' or 'BiasFree', got {layer_norm_type!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def attention_in_fp32(t: torch.Tensor) -> bool:
    """True under CPU autocast: the attention (L2 norms, both matmuls, softmax) then runs in fp32.

    oneDNN's AMX bf16 matmul (torch 2.13 ships oneDNN 3.12) reads the K tail of its first operand past the valid
    columns when K is not a multiple of 32 and relies on zero padding of the second to cancel it; garbage there
    that decodes as NaN/Inf leaks into the output (uxlfoundation/oneDNN#5717, fixed in #5723). Here K is the head
    width, 48 at the official sizes, in ``attn @ v`` and in three of the four backward matmuls, and the bytes read
    depend on the allocator, so it strikes compiled graphs (other buffers) more than eager ones. The attention
    holds a small share of the FLOPs and is the numerically fragile part (norms over H·W, softmax), so it stays in
    fp32 on every CPU; without autocast (and on GPUs) nothing changes.
    """
    return t.device.type == "cpu" and torch.is_autocast_enabled("cpu")


def _modulate(x: torch.Tensor, kernel: nn.Module, ipr: torch.Tensor) -> torch.Tensor:
    """Apply the IPR modulation ``x * s + b`` where ``[s, b] = kernel(ipr)`` (plain scale, not ``1 + s``)."""
    c = x.shape[1]
    sb = kernel(ipr).view(-1, 2 * c, 1, 1)
    scale, shift = sb.chunk(2, dim=1)
    return x * scale + shift


class Attention(nn.Module):
    """Dynamic multi-head transposed attention (DMTA): attention across channels, linear cost in H·W.

    Attribute order (``temperature``, ``kernel``, ``qkv``, ``qkv_dwconv``, ``project_out``) fixes the
    checkpoint key order.
    """

    def __init__(self, dim: int, num_heads: int, bias: bool, ipr_dim: int = 256) -> None:
        super().__init__()
        if dim % num_heads:
            raise OptionError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.kernel = nn.Sequential(nn.Linear(ipr_dim, dim * 2, bias=False))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor, ipr: torch.Tensor) -> torch.Tensor:
        heads = self.num_heads
        x = _modulate(x, self.kernel, ipr)
        qkv = self.qkv_dwconv(self.qkv(x))
        full_precision = attention_in_fp32(qkv)
        with torch.autocast("cpu", enabled=False) if full_precision else contextlib.nullcontext():
            out = self._attend(qkv.float() if full_precision else qkv, heads)
        return self.project_out(out)

    def _attend(self, qkv: torch.Tensor, heads: int) -> torch.Tensor:
        """The attention proper: ``qkv`` (B, 3C, H, W) → (B, C, H, W)."""
        b, c3, h, w = qkv.shape
        c = c3 // 3
        if qkv.is_contiguous(memory_format=torch.channels_last) and not qkv.is_contiguous():
            # Channels-last: the same maths on (B, H·W, 3C) views of the memory, with the output written in that
            # layout too. Reshaping to (B, 3C, H·W) instead would copy here, and hand the depthwise convolution a
            # channels-first gradient that it must reorder in the backward pass.
            q, k, v = qkv.permute(0, 2, 3, 1).reshape(b, h * w, 3, heads, c // heads).unbind(2)
            q, k, v = (t.permute(0, 2, 3, 1) for t in (q, k, v))  # (B, heads, C/heads, H·W) views
            attn = self._channel_attention(q, k)
            out = v.transpose(-2, -1) @ attn.transpose(-2, -1)  # (B, heads, H·W, C/heads) = (attn @ v)ᵀ
            out = out.transpose(1, 2).reshape(b, h, w, c).permute(0, 3, 1, 2)
        else:
            # (B, 3C, H, W) -> three (B, heads, C/heads, H*W) views; no copies.
            q, k, v = qkv.reshape(b, 3, heads, c // heads, h * w).unbind(1)
            out = (self._channel_attention(q, k) @ v).reshape(b, c, h, w)
        return out

    def _channel_attention(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Softmax over channels of the cosine similarities over H·W, scaled per head by ``temperature``."""
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        return ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)


class FeedForward(nn.Module):
    """Dynamic gated feed-forward network (DGFN): ``project_out(gelu(x1) * x2)`` after a depthwise conv.

    ``kernel`` is registered last on purpose: the official FFN defines it after the convs, so its key comes
    last within ``ffn.*``.
    """

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool, ipr_dim: int = 256) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)
        self.kernel = nn.Sequential(nn.Linear(ipr_dim, dim * 2, bias=False))

    def forward(self, x: torch.Tensor, ipr: torch.Tensor) -> torch.Tensor:
        x = _modulate(x, self.kernel, ipr)
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class TransformerBlock(nn.Module):
    """Pre-norm residual block: ``x += attn(norm1(x), ipr)``; ``x += ffn(norm2(x), ipr)``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_expansion_factor: float,
        bias: bool,
        layer_norm_type: str = "WithBias",
        ipr_dim: int = 256,
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, layer_norm_type)
        self.attn = Attention(dim, num_heads, bias, ipr_dim)
        self.norm2 = LayerNorm(dim, layer_norm_type)
        self.ffn = FeedForward(dim, ffn_expansion_factor, bias, ipr_dim)

    def forward(self, x: torch.Tensor, ipr: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), ipr)
        x = x + self.ffn(self.norm2(x), ipr)
        return x


class BlockStack(nn.ModuleList):
    """Integer-indexed list of :class:`TransformerBlock` (same keys as the official ``nn.Sequential``)
    that threads the shared IPR through every block.

    ``checkpoint_every = N`` (0: off) recomputes every N-th block in the backward pass instead of keeping its
    activations (attention maps, the FFN's expanded features), when gradients are being recorded: activation
    memory for compute, the same gradients. Set it with :func:`set_grad_checkpointing`.
    """

    checkpoint_every: int = 0

    def forward(self, x: torch.Tensor, ipr: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        every = self.checkpoint_every if torch.is_grad_enabled() else 0
        for i, block in enumerate(self):
            if every and i % every == 0:
                x = checkpoint(block, x, ipr, use_reentrant=False)
            else:
                x = block(x, ipr)
        return x


def set_grad_checkpointing(net: nn.Module, every: int) -> int:
    """Checkpoint every ``every``-th transformer block of each :class:`BlockStack` in ``net`` (0: none); returns
    how many blocks are checkpointed."""
    count = 0
    for stack in (m for m in net.modules() if isinstance(m, BlockStack)):
        stack.checkpoint_every = int(every)
        count += len(range(0, len(stack), every)) if every else 0
    return count


def _stack(n: int, dim: int, heads: int, ffn: float, bias: bool, ln: str, ipr_dim: int) -> BlockStack:
    return BlockStack([TransformerBlock(dim, heads, ffn, bias, ln, ipr_dim) for _ in range(n)])


class OverlapPatchEmbed(nn.Module):
    """3×3 conv stem (always bias-free, as in the official code); keeps the ``patch_embed.proj`` key."""

    def __init__(self, in_c: int = 3, embed_dim: int = 48, bias: bool = False) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_c, embed_dim, kernel_size=3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Downsample(nn.Module):
    """Halve resolution, double channels: 3×3 conv C→C/2 then PixelUnshuffle(2)."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(n_feat, n_feat // 2, kernel_size=3, padding=1, bias=False), nn.PixelUnshuffle(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """Double resolution, halve channels: 3×3 conv C→2C then PixelShuffle(2)."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(n_feat, n_feat * 2, kernel_size=3, padding=1, bias=False), nn.PixelShuffle(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class DIRformer(nn.Module):
    """Four-level U-net of IPR-modulated transformer blocks with a global residual (``out = net(x) + x``).

    Widths are ``dim·(1, 2, 4, 8)``; decoder level 1 and the refinement stage run at ``2·dim`` (the level-1
    skip is concatenated without a 1×1 reduction). H and W must be multiples of 8.

    ``repeated_blocks`` names the block type the U-net repeats (38 times at the seed size, in five feature shapes):
    a structural hint for regional compilation, which compiles that block once per shape instead of the whole net.

    ``identity_init`` (default True) zeroes the last convolution, so the untrained network returns its input: for
    LDR→HDR that is the plain inverse tone mapping, and the first updates start from it instead of from a random
    residual that makes every output worse (the official initialisation, ``identity_init=False``, adds a random
    image of the input's scale). Its gradient is not zero (the features are not), so training proceeds as usual;
    loading weights overwrites it either way.
    """

    repeated_blocks: Tuple[type, ...] = (TransformerBlock,)

    def __init__(
        self,
        inp_channels: int = 3,
        out_channels: int = 3,
        dim: int = 48,
        num_blocks: Sequence[int] = (4, 6, 6, 8),
        num_refinement_blocks: int = 4,
        heads: Sequence[int] = (1, 2, 4, 8),
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        LayerNorm_type: str = "WithBias",  # noqa: N803 (official option name)
        ipr_dim: int = 256,
        identity_init: bool = True,
    ) -> None:
        super().__init__()
        if inp_channels != out_channels:
            raise OptionError(
                f"inp_channels ({inp_channels}) must equal out_channels ({out_channels}): "
                "the output adds the input image (global residual)"
            )
        if len(num_blocks) != 4 or len(heads) != 4:
            raise OptionError(f"num_blocks and heads need 4 entries each, got {list(num_blocks)} and {list(heads)}")
        ln = LayerNorm_type
        ffn = ffn_expansion_factor
        d1, d2, d3, d4 = dim, dim * 2, dim * 4, dim * 8

        # Registration order below == official order == checkpoint key order.
        self.patch_embed = OverlapPatchEmbed(inp_channels, dim)
        self.encoder_level1 = _stack(num_blocks[0], d1, heads[0], ffn, bias, ln, ipr_dim)
        self.down1_2 = Downsample(d1)
        self.encoder_level2 = _stack(num_blocks[1], d2, heads[1], ffn, bias, ln, ipr_dim)
        self.down2_3 = Downsample(d2)
        self.encoder_level3 = _stack(num_blocks[2], d3, heads[2], ffn, bias, ln, ipr_dim)
        self.down3_4 = Downsample(d3)
        self.latent = _stack(num_blocks[3], d4, heads[3], ffn, bias, ln, ipr_dim)

        self.up4_3 = Upsample(d4)
        self.reduce_chan_level3 = nn.Conv2d(d4, d3, kernel_size=1, bias=bias)
        self.decoder_level3 = _stack(num_blocks[2], d3, heads[2], ffn, bias, ln, ipr_dim)
        self.up3_2 = Upsample(d3)
        self.reduce_chan_level2 = nn.Conv2d(d3, d2, kernel_size=1, bias=bias)
        self.decoder_level2 = _stack(num_blocks[1], d2, heads[1], ffn, bias, ln, ipr_dim)
        self.up2_1 = Upsample(d2)
        self.decoder_level1 = _stack(num_blocks[0], d2, heads[0], ffn, bias, ln, ipr_dim)
        self.refinement = _stack(num_refinement_blocks, d2, heads[0], ffn, bias, ln, ipr_dim)
        self.output = nn.Conv2d(d2, out_channels, kernel_size=3, padding=1, bias=bias)
        if identity_init:  # after every layer is built: the random stream (and so all other weights) is unchanged
            nn.init.zeros_(self.output.weight)
            if self.output.bias is not None:
                nn.init.zeros_(self.output.bias)

    def forward(self, inp_img: torch.Tensor, ipr: torch.Tensor) -> torch.Tensor:
        """Restore ``inp_img`` (B, C, H, W), H and W multiples of 8, under the prior ``ipr`` (B, ipr_dim)."""
        check_spatial_multiple(inp_img, 8, "DIRformer input")
        enc1 = self.encoder_level1(self.patch_embed(inp_img), ipr)
        enc2 = self.encoder_level2(self.down1_2(enc1), ipr)
        enc3 = self.encoder_level3(self.down2_3(enc2), ipr)
        x = self.latent(self.down3_4(enc3), ipr)

        x = self.reduce_chan_level3(torch.cat([self.up4_3(x), enc3], dim=1))
        x = self.decoder_level3(x, ipr)
        x = self.reduce_chan_level2(torch.cat([self.up3_2(x), enc2], dim=1))
        x = self.decoder_level2(x, ipr)
        x = torch.cat([self.up2_1(x), enc1], dim=1)
        x = self.decoder_level1(x, ipr)
        x = self.refinement(x, ipr)
        return self.output(x) + inp_img
