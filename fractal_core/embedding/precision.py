"""Where and in which number format an encoder runs: the device, bf16 autocast where the hardware has it, int8
variants (which give other vectors, so their own encoder id)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

Precision = Literal["auto", "float32", "bfloat16", "int8", "onnx-int8"]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU; anything else is passed to torch, but a CUDA device on a
    machine without one is refused with a clear ``ValueError`` (instead of torch's assertion deep inside)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: no CUDA GPU is available here (torch {torch.__version__})")
    return device


def precision_variant(precision: str) -> str | None:
    """The id suffix of a precision whose vectors differ from float ones (``"int8"``, ``"onnx-int8"``), else
    ``None``: bf16 autocast stays within the float id (min cosine 0.9999 to float32)."""
    return precision if precision in ("int8", "onnx-int8") else None


def _cpu_supports_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def quantize_linear_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantisation of every ``nn.Linear`` (weights int8 once, activations per batch); CPU only."""
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with (
        warnings.catch_warnings()
    ):  # torch 2.13 points eager-mode quantisation users at torchao (not installed)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (``None``: plain float32); one rule for encoding and
    fine-tuning.

    ``"auto"`` -> bfloat16 wherever the hardware has native bf16 dot products, else float32. On a CPU with
    avx512_bf16 it measured ~1.5x faster than float32 with min cosine 0.9999 to the float32
    embeddings (BENCHMARKS.md); without native support autocast would emulate bf16 and run slower.
    ``"bfloat16"`` where unsupported is refused; ``"float32"`` is always float32.
    """
    if precision == "float32":
        return None
    if precision not in ("auto", "bfloat16"):
        raise ValueError(f"unknown precision {precision!r}; expected auto, float32 or bfloat16")
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
    else:
        supported = device.type == "cpu" and _cpu_supports_bf16()
    if precision == "bfloat16" and not supported:
        raise ValueError(f"bfloat16 is not supported on {device} here; use precision='float32'")
    return torch.bfloat16 if supported else None


__all__ = [
    "Precision",
    "autocast_dtype",
    "precision_variant",
    "quantize_linear_int8",
    "resolve_device",
]
