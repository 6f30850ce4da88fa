"""Tone curves of the LDR->HDR pipeline, for ``numpy`` arrays and ``torch`` tensors alike.

All functions are element-wise, keep the input's type and float dtype (a float32 array stays
float32: scalars are passed as Python floats so NumPy 2 does not promote to float64), and accept
any shape. Per-image parameters (``dgain``, ``gamma``) may be Python/NumPy scalars, 0-d tensors or
1-D arrays/tensors of length B; a 1-D parameter is broadcast over the leading (batch) axis of a
``B x ...`` input.

Fork conventions (DiffIR-demotionblur, ``common_function.py``), with ``hdr_max = 1000``:

* ``log_tone_map(x)   = ln(1 + x) / ln(1 + hdr_max + 1e-6)``  (T(1000) = 0.99999999986, no clipping)
* ``hdr_to_ldr(h)     = clip(h / hdr_max * dgain, 0, 1) ** (1 / gamma)``
* ``ldr_to_hdr(l)     = clip(l ** gamma / dgain, 0, 1) * hdr_max``

Network-domain curves (``tone_curve``), each with its inverse, all mapping 0 to about 0 and ``hdr_max`` to 1:
``log`` (the fork's), ``linear`` (``x / hdr_max``), ``pu21`` (PU21 banding_glare of x taken as cd/m², over
PU21(hdr_max)), ``pq`` (SMPTE ST 2084 of x / 10000 cd/m², over PQ(hdr_max / 10000)) and ``mu_law``
(``ln(1 + μ x / hdr_max) / ln(1 + μ)``, μ = 5000). See :data:`TONE_CURVES`.
"""
from __future__ import annotations

import math
from typing import Any, Union

import numpy as np
import torch

from DiffIR.metrics.mu_law import MU_LAW_MU, mu_law
from DiffIR.metrics.pu21 import pu21_decode, pu21_encode

Array = Union[np.ndarray, torch.Tensor]

__all__ = [
    "log_tone_map",
    "inverse_log_tone_map",
    "linear_tone_map",
    "inverse_linear_tone_map",
    "hdr_to_ldr",
    "ldr_to_hdr",
    "display_tone_map",
    "pu21_tone_map",
    "inverse_pu21_tone_map",
    "pq_tone_map",
    "inverse_pq_tone_map",
    "pq_encode",
    "pq_decode",
    "MU_LAW_MU",
    "mu_law",
    "mu_law_tone_map",
    "inverse_mu_law_tone_map",
    "TONE_CURVES",
    "apply_tone_curve",
    "inverse_tone_curve",
    "ldr_to_network_input",
    "network_input_to_ldr",
]


def _is_torch(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def _as_float_input(x: Any) -> Array:
    """Tensors and float arrays pass through; anything else becomes a float64 (Python-like) array."""
    if _is_torch(x):
        return x if x.is_floating_point() else x.float()
    arr = np.asarray(x)
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    return arr


def _param(p: Any, x: Array) -> Any:
    """Make a per-image parameter broadcastable against ``x`` without changing ``x``'s dtype."""
    if _is_torch(p):
        if p.ndim == 0:
            return float(p) if not _is_torch(x) else p.to(dtype=x.dtype, device=x.device)
        t = p.to(dtype=x.dtype, device=x.device) if _is_torch(x) else p.detach().cpu().numpy().astype(x.dtype)
    else:
        a = np.asarray(p)
        if a.ndim == 0:
            return float(a)
        t = torch.as_tensor(a, dtype=x.dtype, device=x.device) if _is_torch(x) else a.astype(x.dtype)
    if t.ndim == 1 and x.ndim > 1:
        if t.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"parameter of length {t.shape[0]} does not match the batch size {x.shape[0]}")
        t = t.reshape((-1,) + (1,) * (x.ndim - 1))
    return t


def _clip(x: Array, lo: float, hi: float) -> Array:
    return x.clamp(lo, hi) if _is_torch(x) else np.clip(x, lo, hi)


def _clip_min(x: Array, lo: float) -> Array:
    return x.clamp_min(lo) if _is_torch(x) else np.maximum(x, lo).astype(x.dtype, copy=False)


def _ufunc(name: str, x: Array) -> Array:
    """``torch.<name>(x)`` or ``np.<name>(x)`` (log1p, expm1), in ``x``'s dtype."""
    if _is_torch(x):
        return getattr(torch, name)(x)
    return getattr(np, name)(x).astype(x.dtype, copy=False)


def _wide(x: Array) -> Array:
    """NumPy input in float64 (steep curves such as PQ's m2 = 78.8 power lose digits in float32); tensors as is."""
    return x if _is_torch(x) else np.asarray(x, dtype=np.float64)


def _like(result: Array, x: Array) -> Array:
    """``result`` in ``x``'s float dtype (helpers that compute NumPy in float64 would otherwise promote)."""
    return result if _is_torch(result) else np.asarray(result).astype(x.dtype, copy=False)


def _log_denominator(hdr_max: float) -> float:
    if not hdr_max > 0:
        raise ValueError(f"hdr_max must be > 0, got {hdr_max}")
    return math.log(1.0 + float(hdr_max) + 1e-6)


def log_tone_map(x: Array, hdr_max: float = 1000.0) -> Array:
    """Fork's ``log_tone_mapping``: ``ln(1+x) / ln(1 + hdr_max + 1e-6)``.

    Not clipped (x > hdr_max gives values > 1); inputs below 0 are not clamped here (x = -1 gives
    -inf) -- clamp negative radiance before calling.
    """
    return _ufunc("log1p", _as_float_input(x)) / _log_denominator(hdr_max)


def inverse_log_tone_map(y: Array, hdr_max: float = 1000.0) -> Array:
    """Inverse of :func:`log_tone_map`: ``exp(y * ln(1 + hdr_max + 1e-6)) - 1``."""
    return _ufunc("expm1", _as_float_input(y) * _log_denominator(hdr_max))


def linear_tone_map(x: Array, hdr_max: float = 1000.0) -> Array:
    """``x / hdr_max`` (the ``tone_curve: linear`` option)."""
    x = _as_float_input(x)
    _log_denominator(hdr_max)
    return x / float(hdr_max)


def inverse_linear_tone_map(y: Array, hdr_max: float = 1000.0) -> Array:
    """``y * hdr_max``."""
    y = _as_float_input(y)
    _log_denominator(hdr_max)
    return y * float(hdr_max)


def _pu21_scale(hdr_max: float) -> float:
    """PU21(hdr_max): the code value that the ``pu21`` curve maps to 1."""
    _log_denominator(hdr_max)
    return float(pu21_encode(float(hdr_max)))


def pu21_tone_map(x: Array, hdr_max: float = 1000.0) -> Array:
    """PU21 (banding_glare) of ``x`` taken as cd/m² (clamped to [0.005, 10000] by the encoder), over PU21(hdr_max):
    the domain the AIM 2025 ranking metric (PU21-PSNR) measures in."""
    x = _as_float_input(x)
    return _like(pu21_encode(x) / _pu21_scale(hdr_max), x)


def inverse_pu21_tone_map(y: Array, hdr_max: float = 1000.0) -> Array:
    """The PU21 decoder of ``y * PU21(hdr_max)`` (cd/m²; at least about 0.005, the encoder's floor)."""
    y = _as_float_input(y)
    return _like(pu21_decode(y * _pu21_scale(hdr_max)), y)


# SMPTE ST 2084 (PQ) constants, as the standard writes them
_PQ_M1 = 2610.0 / 16384.0
_PQ_M2 = 2523.0 / 4096.0 * 128.0
_PQ_C1 = 3424.0 / 4096.0
_PQ_C2 = 2413.0 / 4096.0 * 32.0
_PQ_C3 = 2392.0 / 4096.0 * 32.0
_PQ_PEAK = 10000.0  #: cd/m² that PQ maps to 1
#: the PQ code of 0 cd/m²; the decoder gives 0 at and below it, so clamping there changes no value but keeps the
#: gradient of ``E ** (1 / m2)`` finite at E = 0
_PQ_ZERO = _PQ_C1 ** _PQ_M2


def pq_encode(y: Array) -> Array:
    """ST 2084 inverse EOTF of ``y`` = luminance / 10000 cd/m² (negatives count as 0); 1 at 10000 cd/m²."""
    yp = _clip_min(_as_float_input(y), 0.0) ** _PQ_M1
    return ((_PQ_C1 + _PQ_C2 * yp) / (1.0 + _PQ_C3 * yp)) ** _PQ_M2


def pq_decode(e: Array) -> Array:
    """ST 2084 EOTF: PQ code ``e`` → luminance / 10000 cd/m² (0 for codes up to PQ(0))."""
    ep = _clip_min(_as_float_input(e), _PQ_ZERO) ** (1.0 / _PQ_M2)
    return (_clip_min(ep - _PQ_C1, 0.0) / (_PQ_C2 - _PQ_C3 * ep)) ** (1.0 / _PQ_M1)


def _pq_scale(hdr_max: float) -> float:
    _log_denominator(hdr_max)
    return float(pq_encode(np.float64(hdr_max) / _PQ_PEAK))


def pq_tone_map(x: Array, hdr_max: float = 1000.0) -> Array:
    """PQ of ``x / 10000`` (``x`` in cd/m²) over PQ(hdr_max / 10000), so ``hdr_max`` → 1 (HDR10's curve)."""
    x = _as_float_input(x)
    return _like(pq_encode(_wide(x) / _PQ_PEAK) / _pq_scale(hdr_max), x)


def inverse_pq_tone_map(y: Array, hdr_max: float = 1000.0) -> Array:
    """Inverse of :func:`pq_tone_map` (cd/m²)."""
    y = _as_float_input(y)
    return _like(pq_decode(_wide(y) * _pq_scale(hdr_max)) * _PQ_PEAK, y)


def mu_law_tone_map(x: Array, hdr_max: float = 1000.0) -> Array:
    """:func:`mu_law` of ``x / hdr_max`` (the ``tone_curve: mu_law`` option; not clipped)."""
    return mu_law(linear_tone_map(x, hdr_max))


def inverse_mu_law_tone_map(y: Array, hdr_max: float = 1000.0) -> Array:
    """``hdr_max · ((1 + μ)^y − 1) / μ``."""
    y = _as_float_input(y)
    return inverse_linear_tone_map(_ufunc("expm1", y * math.log1p(MU_LAW_MU)) / MU_LAW_MU, hdr_max)


def hdr_to_ldr(hdr: Array, dgain: Any, gamma: Any, hdr_max: float = 1000.0) -> Array:
    """Fork's forward model (``custom_tone_mapping``): ``clip(hdr / hdr_max * dgain, 0, 1) ** (1 / gamma)``.

    Saturation point in HDR units = ``hdr_max / dgain``. Output is the float LDR in ``[0, 1]``
    (quantise to 8 bit separately).
    """
    hdr = _as_float_input(hdr)
    g = _param(dgain, hdr)
    gm = _param(gamma, hdr)
    x = _clip(hdr * (g / float(hdr_max)), 0.0, 1.0)
    return x ** (1.0 / gm)


def ldr_to_hdr(ldr: Array, dgain: Any, gamma: Any, hdr_max: float = 1000.0) -> Array:
    """Fork's inverse: ``clip(ldr ** gamma / dgain, 0, 1) * hdr_max``.

    ``ldr`` is clamped at 0 first (a negative value with a non-integer gamma would give NaN); for
    valid LDR input in ``[0, 1]`` this is exactly the fork's formula. Output is capped at
    ``hdr_max`` (the clip), so saturated pixels map to ``hdr_max / dgain`` or at most ``hdr_max``.
    """
    ldr = _clip_min(_as_float_input(ldr), 0.0)
    g = _param(dgain, ldr)
    gm = _param(gamma, ldr)
    return _clip(ldr ** gm / g, 0.0, 1.0) * float(hdr_max)


def display_tone_map(
    hdr_linear: Array,
    method: str = "reinhard",
    hdr_max: float = 1000.0,
    exposure: float = 1.0,
    gamma: float = 2.2,
) -> Array:
    """Map linear HDR radiance to a viewable ``[0, 1]`` image (TensorBoard / PNG previews).

    The curve is global and fixed (not per-image), so previews of different steps are comparable.

    * ``'reinhard'``: ``v = exposure * x / (0.1 * hdr_max)`` (a tenth of the peak = diffuse
      white), extended Reinhard ``v (1 + v / w^2) / (1 + v)`` with white point
      ``w = 10 * exposure`` (so ``hdr_max`` maps to 1), then display gamma ``1/gamma``.
    * ``'log'``: the training curve :func:`log_tone_map` of ``exposure * x`` (already perceptual;
      no extra gamma).
    * ``'gamma'``: ``(exposure * x / hdr_max) ** (1/gamma)``.

    Negative values map to 0, everything is clipped to ``[0, 1]``.
    """
    x = _clip_min(_as_float_input(hdr_linear), 0.0) * float(exposure)
    m = method.lower()
    if m == "reinhard":
        ref = 0.1 * float(hdr_max)
        w = 10.0 * float(exposure)
        v = x / ref
        y = v * (1.0 + v / (w * w)) / (1.0 + v)
        y = _clip(y, 0.0, 1.0) ** (1.0 / float(gamma))
    elif m == "log":
        y = _clip(log_tone_map(x, hdr_max), 0.0, 1.0)
    elif m == "gamma":
        y = _clip(x / float(hdr_max), 0.0, 1.0) ** (1.0 / float(gamma))
    else:
        raise ValueError(f"display_tone_map: unknown method '{method}'; use 'reinhard', 'log' or 'gamma'")
    if not _is_torch(y):
        y = y.astype(x.dtype, copy=False)
    return y


# The network-domain tone curves by their option name (``tone_curve``): forward and inverse.
TONE_CURVES = {
    "log": (log_tone_map, inverse_log_tone_map),
    "linear": (linear_tone_map, inverse_linear_tone_map),
    "pu21": (pu21_tone_map, inverse_pu21_tone_map),
    "pq": (pq_tone_map, inverse_pq_tone_map),
    "mu_law": (mu_law_tone_map, inverse_mu_law_tone_map),
}


def apply_tone_curve(hdr_linear: Array, curve: str, hdr_max: float = 1000.0) -> Array:
    """Linear HDR → the network domain with the named curve."""
    return TONE_CURVES[curve][0](hdr_linear, hdr_max)


def inverse_tone_curve(network: Array, curve: str, hdr_max: float = 1000.0) -> Array:
    """The network domain → linear HDR (file units) with the named curve."""
    return TONE_CURVES[curve][1](network, hdr_max)


def ldr_to_network_input(ldr: Array, dgain: Any, gamma: Any, hdr_max: float = 1000.0, tone_curve: str = "log",
                         lq_linearize: bool = True) -> Array:
    """An LDR image in [0, 1] as the network sees it: linearised with its dgain/gamma, then tone-curved.

    The one definition shared by the datasets and LDR-only inference, so training and use cannot drift apart.
    """
    if not lq_linearize:
        return ldr
    return apply_tone_curve(ldr_to_hdr(ldr, dgain, gamma, hdr_max), tone_curve, hdr_max)


def network_input_to_ldr(lq: Array, dgain: Any, gamma: Any, hdr_max: float = 1000.0, tone_curve: str = "log",
                         lq_linearize: bool = True) -> Array:
    """The LDR in [0, 1] behind a network input (inverse of :func:`ldr_to_network_input`).

    Exact where the LDR was not saturated by the linearisation (``ldr ** gamma / dgain <= 1``); brighter LDR values
    come back as ``min(dgain, 1) ** (1 / gamma)``.
    """
    if not lq_linearize:
        return lq
    return hdr_to_ldr(inverse_tone_curve(lq, tone_curve, hdr_max), dgain, gamma, hdr_max)
