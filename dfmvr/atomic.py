"""Atomic file output: write to a temporary file beside the target, then rename.

An interrupted run never leaves a half-written mesh, checkpoint, graph or engine behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "interrupts_held"]


@contextlib.contextmanager
def atomic_path(target, suffix: str | None = None):
    """Yield a temporary path beside ``target``; on success rename it onto ``target``.

    The temporary name keeps the target's suffix (or ``suffix``) so that writers that pick a format
    from the extension (trimesh, cv2.imwrite, np.savez) behave as for the real name.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=suffix if suffix is not None else target.suffix,
        dir=target.parent,
    )
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates the file 0600; give the result the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)   # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def atomic_write_bytes(target, data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target, text: str) -> Path:
    return atomic_write_bytes(target, text.encode("utf-8"))


@contextlib.contextmanager
def interrupts_held():
    """SIGINT and SIGTERM held back over the body and delivered (once each) after it, for files that must change
    together: a checkpoint's weights and its training state, one new beside one old, could not be resumed.
    Main thread only, and Python-level rather than a signal mask: Python runs its handlers in the main thread
    whichever thread the kernel delivered to (torch's threads included). A handler installed outside Python
    (``getsignal`` None) cannot be put back, so that signal is left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(sig) is not None}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(caught):
            signal.raise_signal(sig)
