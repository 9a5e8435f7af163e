"""How the trainer runs the network's forward and backward pass: the execution modes ``dfmvr-train
--speed`` chooses between, and which of them this machine supports.

- ``eager``          plain PyTorch, fp32, contiguous (NCHW) tensors.
- ``channels_last``  the model's weights (and so its convolution outputs) in NHWC order: oneDNN's
                     preferred layout for convolutions on x86 CPUs.
- ``compile``        ``torch.compile`` (inductor) of the network's forward; its backward comes from
                     AOTAutograd. The loss stays eager. The first steps pay the compile time.
- ``bf16``           bfloat16 autocast on CPU, only where the CPU computes bf16 natively (AVX512-BF16 or
                     AMX); emulated bf16 is slower than fp32 and would only lose precision.

On CUDA the trainer always uses fp16 autocast (mixed precision), whatever the mode says about CPUs.

``auto`` is the mode measured fastest on CPU without changing the training result; the card records the
mode a run used (``provenance.speed_mode``). It is eager on both CPUs measured (docs/training.md,
"Training speed"): on an AVX2 CPU no mode wins clearly (``benchmarks/results/train_throughput.json``);
on an AVX512-BF16 CPU bf16 is 1.2x faster per step but its rotation and identity end worse at equal
steps on two seeds (``train_throughput_avx512_bf16_*.json``, ``scratch_bf16_vs_eager.json``), and
channels_last (1.1x there, the same arithmetic) ends better on one seed and worse on the other by as
much as a change of seed (``scratch_channels_last_vs_eager.json``): rounding noise at 600 steps is
too large for two seeds to show that a mode trains the same, so no mode has earned the default.
"""

from __future__ import annotations

import torch

__all__ = ["SPEED_MODES", "AUTO_MODE", "cpu_has_native_bf16", "unsupported_reason", "resolve_speed_mode",
           "prepare_model", "wrap_forward", "autocast_dtype"]

SPEED_MODES = ("eager", "channels_last", "compile", "bf16")
AUTO_MODE = "eager"       # what "auto" picks on CPU, every CPU: set from the measurements (module docstring)


def cpu_has_native_bf16() -> bool:
    """True where oneDNN computes bf16 in hardware (AVX512-BF16 / AMX), the only case bf16 pays on a CPU."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


def unsupported_reason(mode: str, device: torch.device) -> str | None:
    """None when ``mode`` can run on ``device`` here, else why not (one sentence)."""
    if mode not in SPEED_MODES:
        raise ValueError(f"unknown speed mode {mode!r}; known: auto, {', '.join(SPEED_MODES)}")
    if mode == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        return "this CPU has no native bf16 (AVX512-BF16 or AMX): bf16 would be emulated, slower than fp32"
    if mode == "compile" and not hasattr(torch, "compile"):
        return "this PyTorch has no torch.compile"
    return None


def resolve_speed_mode(mode: str, device: torch.device) -> str:
    """``auto`` -> the measured default for this device; an explicit mode is checked and returned."""
    if mode == "auto":
        return "eager" if device.type == "cuda" else AUTO_MODE
    reason = unsupported_reason(mode, device)
    if reason:
        raise ValueError(f"--speed {mode}: {reason}")
    return mode


def prepare_model(model: torch.nn.Module, mode: str) -> None:
    """``channels_last``: convert the model's 4-D weights to NHWC in place (its convolutions then answer
    in NHWC). Checkpoints are written contiguous whatever the layout (``models.checkpoint``)."""
    if mode == "channels_last":
        model.to(memory_format=torch.channels_last)


def wrap_forward(net: torch.nn.Module, mode: str) -> torch.nn.Module:
    """The callable the trainer runs forward through: ``net`` itself, or for ``compile`` a compiled
    wrapper sharing its parameters (saving, validation and batch-norm recalibration use ``net``)."""
    return torch.compile(net) if mode == "compile" else net


def autocast_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a training step, or None for fp32."""
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if mode == "bf16" else None
