"""Atomic file output: write to a temporary file beside the target, then rename.

An interrupted run never leaves a half-written mesh, checkpoint, graph or engine behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text"]


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
