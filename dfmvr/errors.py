"""Project errors. Every message says what was expected, what was found and what to do.

The CLI maps ``exit_code`` to the process exit status: 2 for bad usage or bad input, 3 for a
requested capability that this machine lacks (e.g. a TensorRT engine without TensorRT), 1 otherwise.
"""

from __future__ import annotations

__all__ = ["DfmvrError", "InputError", "UnavailableError", "MissingExtraError"]


class DfmvrError(Exception):
    """Base class of dfmvr's errors."""

    exit_code = 1


class InputError(DfmvrError):
    """Bad user input: a missing, corrupt or incompatible file, a wrong size, a mismatched model."""

    exit_code = 2

    def __init__(self, path, problem: str, fix: str | None = None):
        self.path = str(path) if path is not None else None
        self.problem = problem
        self.fix = fix
        where = f"{self.path}: " if self.path else ""
        msg = f"{where}{problem}"
        if fix:
            msg += f" -- {fix}"
        super().__init__(msg)


class UnavailableError(DfmvrError):
    """A capability was demanded that this machine cannot provide (no GPU, no TensorRT)."""

    exit_code = 3


class MissingExtraError(DfmvrError, ImportError):
    """An optional dependency is not installed; the message names the extra that provides it."""

    exit_code = 2

    def __init__(self, module: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the Python package '{module}', which is not installed -- "
            f"install it with: pip install 'dfmvr[{extra}]'"
        )


def require(module: str, extra: str, purpose: str):
    """Import an optional dependency lazily, or raise MissingExtraError naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError(module, extra, purpose) from exc
