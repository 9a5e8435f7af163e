"""One check for a torch device named on the command line (``--refine-device``, ``dfmvr-train --device``).

torch itself answers a misspelt name with a RuntimeError and a CUDA device on a CPU-only build with an
AssertionError, both as tracebacks; here they become a usage error (exit 2) and a missing capability
(exit 3, as for ``dfmvr-run --device cuda`` without a GPU), each naming the option and what to use instead.
"""

from __future__ import annotations

import torch

from ..errors import InputError, UnavailableError

__all__ = ["resolve_torch_device"]


def resolve_torch_device(name: str, option: str) -> torch.device:
    """``name`` ("cpu", "cuda", "cuda:1", ...) as a torch device this process can allocate on.
    Raises InputError (not a device name) or UnavailableError (a device this machine or build lacks)."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise InputError(None, f"{option} {name!r} is not a torch device ({exc})", f"use {option} cpu, cuda or cuda:N")
    try:
        torch.empty(0, device=device)        # what any first use would do; cheap, and checks the index too
    except (RuntimeError, AssertionError) as exc:
        raise UnavailableError(f"{option} {name}: this machine's torch {torch.__version__} cannot use it "
                               f"({str(exc).strip().splitlines()[0]}) -- use {option} cpu")
    return device
