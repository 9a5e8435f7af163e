"""What ships inside the package beside the code: the bundled default model's files.

``BUNDLED_DIR`` is the one place the folder is spelled: the face-model selection (dfmvr.face) and the
runtime's artifact loader (dfmvr.runtime) both import it, and neither may import the other's side.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BUNDLED_DIR"]

BUNDLED_DIR = Path(__file__).resolve().parent / "default"
