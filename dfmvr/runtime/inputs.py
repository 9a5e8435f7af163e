"""Finding triplets (left, front, right photos) and decoding images robustly to RGB uint8.

Triplet naming, per folder (views in ``VIEWS`` order):
- ``left.*``, ``front.*``, ``right.*`` (case-insensitive);
- the official checkpoint's suffixes ``<name>_lt.*``, ``<name>_ft.*``, ``<name>_rt.*``;
- the official samples' ``<name>0.*``, ``<name>1.*``, ``<name>2.*`` (0 left, 1 front, 2 right).
A folder may hold several triplets of the suffix kinds (one per ``<name>``).

Symbolic links (``LINK_RULE``, also in ``dfmvr-run --help`` and docs/runtime.md): a link to an image
is read as the image; a link to a folder is followed, but every real folder is searched once, so a
link to ``.`` or to a folder already searched adds nothing.

Decoding accepts jpg/png/bmp/webp/tiff, 8 or 16 bit, grey, RGB or RGBA, and applies the EXIF
orientation of JPEG files, so the face is upright as the photographer saw it.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError
from ..face.layout import VIEW_SUFFIXES, VIEWS

__all__ = ["IMAGE_EXTENSIONS", "LINK_RULE", "Triplet", "TripletProblem", "discover_triplets", "search_folders",
           "triplet_from_paths",
           "decode_image", "exif_orientation", "apply_orientation"]

LINK_RULE = ("Symbolic links: a link to an image is read as that image; a link to a folder is followed, "
             "but every real folder is searched once (under its own name when it is inside the input "
             "folder), so a link to '.' or to a folder already searched adds nothing.")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# Photo formats met in the wild that OpenCV does not decode: named in the error when a view is missing because
# of them (a phone's front.heic), instead of reporting the view as absent.
UNSUPPORTED_IMAGE_EXTENSIONS = (".heic", ".heif", ".gif", ".avif", ".jxl", ".dng", ".cr2", ".nef", ".arw", ".psd",
                                ".svg")
# RGBA pixels are composited over this grey so that a transparent background is neutral.
ALPHA_BACKGROUND = 127.5


@dataclass
class Triplet:
    """One reconstruction's input: a name (also its output folder, relative) and three image paths."""

    name: str
    paths: dict[str, Path] = field(default_factory=dict)   # view name -> image path

    def ordered(self) -> list[Path]:
        return [self.paths[v] for v in VIEWS]


@dataclass
class TripletProblem:
    """A triplet that cannot be run (e.g. a view is missing); reported while the others go on."""

    name: str
    error: InputError


_NAMED = {v: v for v in VIEWS}
_SUFFIX_RE = [(re.compile(rf"^(.*?){re.escape(s)}$", re.I), v) for s, v in zip(VIEW_SUFFIXES, VIEWS)]
_DIGIT_RE = re.compile(r"^(.*?)([012])$")


def _view_of(stem: str) -> tuple[str, str] | None:
    """File stem -> (triplet key, view) or None if the name says no view."""
    low = stem.lower()
    if low in _NAMED:
        return "", _NAMED[low]
    for rx, view in _SUFFIX_RE:
        m = rx.match(stem)
        if m:
            return m.group(1).rstrip("_-. "), view
    m = _DIGIT_RE.match(stem)
    if m:
        return m.group(1).rstrip("_-. "), VIEWS[int(m.group(2))]
    return None


def _folder_triplets(folder: Path, name: str) -> tuple[list[Triplet], list[TripletProblem]]:
    groups: dict[str, dict[str, list[Path]]] = {}
    unusable: dict[tuple[str, str], list[str]] = {}     # (key, view) -> why a file named for it was not read
    for p in sorted(folder.iterdir()):
        hit = _view_of(p.stem)
        if hit is None:
            continue
        key, view = hit
        suffix = p.suffix.lower()
        if suffix not in IMAGE_EXTENSIONS + UNSUPPORTED_IMAGE_EXTENSIONS:
            continue            # notes.txt, a folder named 0: not meant as a photo
        if not p.is_file():
            unusable.setdefault(hit, []).append(f"{p.name} is {'a folder' if p.is_dir() else 'a broken link'}")
        elif suffix in UNSUPPORTED_IMAGE_EXTENSIONS:
            unusable.setdefault(hit, []).append(f"{p.name} is an image type dfmvr does not read")
        else:
            groups.setdefault(key, {}).setdefault(view, []).append(p)
    # Unread files only explain the views a triplet is missing. A group of them alone is a triplet only when
    # it names all three views (an all-HEIC triplet); an IMG_0012.HEIC beside a good triplet is not one (it
    # would fail the batch, end single-triplet mode and rename the good triplet by adding a second group).
    for key in {k for k, _ in unusable} - set(groups):
        if all((key, v) in unusable for v in VIEWS):
            groups[key] = {}
    triplets, problems = [], []
    for key, views in sorted(groups.items()):
        # one triplet in a folder is named after the folder; several get "<folder>/<key>"
        tname = name if (not key or len(groups) == 1) else (f"{name}/{key}" if name else key)
        tname = tname or folder.name
        dup = [v for v, ps in views.items() if len(ps) > 1]
        missing = [v for v in VIEWS if v not in views]
        if dup:
            problems.append(TripletProblem(tname, InputError(
                folder, f"more than one image for view(s) {dup}: "
                f"{[p.name for v in dup for p in views[v]]}", "keep one image per view")))
        elif missing:
            have = ", ".join(p.name for ps in views.values() for p in ps)
            why = [w for v in missing for w in unusable.get((key, v), [])]
            problems.append(TripletProblem(tname, InputError(
                folder, f"triplet '{tname}' is missing view(s) {missing} (found: {have})"
                + (f"; {'; '.join(why)} ({', '.join(sorted(IMAGE_EXTENSIONS))} are read)" if why else ""),
                "add the missing photo as left.*, front.*, right.* (or <name>0/1/2, <name>_lt/_ft/_rt)")))
        else:
            triplets.append(Triplet(tname, {v: views[v][0] for v in VIEWS}))
    return triplets, problems


def discover_triplets(inputs) -> tuple[list[Triplet], list[TripletProblem]]:
    """Turn the command-line inputs into triplets, plus problems for incomplete ones.

    ``inputs``: one folder (a triplet folder or a tree of them, searched recursively) or exactly three
    image paths (left, front, right). Raises InputError if nothing usable was given.
    """
    paths = [Path(p) for p in inputs]
    if not paths:
        raise InputError(None, "no input given", "pass a triplet folder, a folder of triplets or three images")
    for p in paths:
        if not p.exists():
            raise InputError(p, "input not found", "check the path")
    if len(paths) == 3 and all(p.is_file() for p in paths):
        return [triplet_from_paths(paths)], []
    if len(paths) != 1 or not paths[0].is_dir():
        raise InputError(paths[0], f"expected one folder or three image files, got {len(paths)} path(s)",
                         "pass a triplet folder, a folder of triplets, or left/front/right image paths")
    root = paths[0]
    triplets, problems = [], []
    for folder in search_folders(root):
        rel = folder.relative_to(root).as_posix()
        t, pr = _folder_triplets(folder, "" if rel == "." else rel)
        for x in t + pr:
            if not x.name:
                x.name = root.resolve().name
        triplets += t
        problems += pr
    if not triplets and not problems:
        raise InputError(root, "no triplet found (no images named left/front/right, <name>0/1/2 or "
                         "<name>_lt/_ft/_rt)", "name the three photos left.jpg, front.jpg, right.jpg")
    return triplets, problems


def search_folders(root) -> list[Path]:
    """``root`` and the folders under it that are searched for triplets, sorted, each real folder once.

    Links follow ``LINK_RULE``: a folder is searched once, under its real (link-free) path when it has
    one inside ``root``, else under the first link (in sorted order) that reaches it. So a link to
    ``.`` (or to any folder already searched) adds nothing, and a batch folder may be a folder of links
    to triplet folders kept elsewhere. Hidden folders (``.name``, also our own temporary output
    folders) are skipped.
    """
    root = Path(root)
    seen = {root.resolve()}
    real: list[Path] = []          # 1) folders reached without following a link
    for parent, dirs, _ in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for d in dirs:
            folder = Path(parent) / d
            if not folder.is_symlink():
                real.append(folder)
                seen.add(folder.resolve())
    linked: list[Path] = []        # 2) folders reached only through links, each real folder once
    pending = sorted([root, *real])
    while pending:
        parent = pending.pop(0)
        try:
            entries = sorted(parent.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            target = entry.resolve()
            if target not in seen:     # a link, or a folder inside a linked one, not searched yet
                seen.add(target)
                linked.append(entry)
                pending.append(entry)
    return [root] + sorted(real + linked)


def triplet_from_paths(paths) -> Triplet:
    """Three image paths in VIEWS order (left, front, right) -> a Triplet named after the first."""
    paths = [Path(p) for p in paths]
    if len(paths) != len(VIEWS):
        raise InputError(None, f"expected {len(VIEWS)} images (left, front, right), got {len(paths)}")
    hit = _view_of(paths[0].stem)
    name = (hit[0] if hit and hit[0] else paths[0].parent.resolve().name) or "triplet"
    return Triplet(name, dict(zip(VIEWS, paths)))


# --- decoding --------------------------------------------------------------------------------------
def exif_orientation(data: bytes) -> int:
    """EXIF orientation tag (1-8) of JPEG bytes; 1 (upright) when absent or unreadable."""
    if data[:2] != b"\xff\xd8":
        return 1
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker in (0xD9, 0xDA):      # end of image / start of scan: no more metadata
            break
        size = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        seg = data[pos + 4:pos + 2 + size]
        if marker == 0xE1 and seg[:6] == b"Exif\x00\x00":
            return _tiff_orientation(seg[6:])
        pos += 2 + size
    return 1


def _tiff_orientation(tiff: bytes) -> int:
    try:
        order = {b"II": "<", b"MM": ">"}[tiff[:2]]
        ifd = struct.unpack(order + "I", tiff[4:8])[0]
        count = struct.unpack(order + "H", tiff[ifd:ifd + 2])[0]
        for i in range(count):
            entry = tiff[ifd + 2 + 12 * i: ifd + 14 + 12 * i]
            tag, typ = struct.unpack(order + "HH", entry[:4])
            if tag == 0x0112 and typ == 3:
                value = struct.unpack(order + "H", entry[8:10])[0]
                return value if 1 <= value <= 8 else 1
    except (KeyError, struct.error, IndexError):
        pass
    return 1


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Rotate/flip a stored image [H, W, ...] so that it displays upright (EXIF orientation 1-8)."""
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: a.swapaxes(0, 1)[:, ::-1],     # stored rotated 90° counter-clockwise
        7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
        8: lambda a: a.swapaxes(0, 1)[::-1],
    }
    return np.ascontiguousarray(ops.get(orientation, ops[1])(image))


def decode_image(path) -> np.ndarray:
    """Read an image file -> RGB uint8 [H, W, 3], upright. Raises InputError naming the file.

    16-bit images are scaled to 8 bit, grey is replicated to RGB, RGBA is composited over mid-grey.
    """
    path = Path(path)
    if path.is_dir():       # Windows says "Permission denied" for a folder read as a file
        raise InputError(path, "is a folder, not an image file", "pass the image's path")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, "image file not found", "check the path") from None
    except OSError as exc:
        raise InputError(path, f"image file cannot be read ({exc.strerror})", "check its permissions") from None
    if not data:
        raise InputError(path, "image file is empty (0 bytes)", "replace it with the real photo")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise InputError(path, "not a readable image (corrupt, truncated or an unsupported format)",
                         "use a jpg, png, bmp or webp photo")
    if img.dtype == np.uint16:
        img = ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif img.dtype != np.uint8:
        scale = 255.0 if img.dtype.kind == "f" else 255.0 / max(float(np.iinfo(img.dtype).max), 1.0)
        img = np.clip(img.astype(np.float32) * scale + 0.5, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        rgb = np.repeat(img[:, :, None], 3, axis=2)
    elif img.shape[2] == 1:
        rgb = np.repeat(img, 3, axis=2)
    elif img.shape[2] == 3:
        rgb = img[:, :, ::-1]
    elif img.shape[2] == 4:
        alpha = img[:, :, 3:4].astype(np.float32) / 255.0
        rgb = img[:, :, 2::-1].astype(np.float32) * alpha + ALPHA_BACKGROUND * (1.0 - alpha)
        rgb = (rgb + 0.5).astype(np.uint8)
    else:
        raise InputError(path, f"image has {img.shape[2]} channels", "use a grey, RGB or RGBA image")
    return apply_orientation(np.ascontiguousarray(rgb), exif_orientation(data))
