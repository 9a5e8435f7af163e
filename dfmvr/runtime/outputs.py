"""Per-triplet outputs, written into a hidden temporary folder that is renamed into place at the end,
so a triplet's folder is either complete or absent.

Files (``FORMATS`` selects them):
- ``mesh.obj`` / ``mesh.ply``: the mesh in the front view's pose (millimetres, ``dfmvr.face.meshio``), vertex
  colours = the front view's SH-lit colour clipped to [0, 1];
- ``coeffs.npz``: the coefficient blocks (``Coefficients`` field names, batch axis dropped), the flat
  vector, parse labels [V, S, S] uint8, landmarks in crop and photo pixels [V, 68, 2];
- ``result.json``: per-view yaw/pitch/roll (degrees) and translation, how the face was found (``detection``:
  detector, path -- ``hog``, ``hog-upsampled``, ``cnn`` or ``other-views``, see ``detect`` -- and box),
  per-stage timings (ms), model id; with ``--refine N`` a ``refine`` record (``dfmvr.runtime.refine``);
- ``overlay.png``: the three photos side by side with the reconstruction painted over them;
  ``overlay.jpg`` (format ``jpg``, not a default): the same picture as JPEG, ~4x faster to encode.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, atomic_write_text
from ..errors import InputError
from ..face.geometry import rotation_matrix
from ..face.layout import VIEW_YAW_DEG, VIEWS

__all__ = ["FORMATS", "FORMAT_FILES", "OVERLAY_FORMATS", "SLOT_YAW_TOLERANCE_DEG", "needs_photos", "parse_formats",
           "pose_record", "slot_doubts",
           "write_reconstruction", "staged_folder", "output_folder", "holds_sources", "already_written",
           "landmarks_on_photo"]

FORMATS = ("obj", "ply", "npz", "json", "png", "jpg")
FORMAT_FILES = {"obj": "mesh.obj", "ply": "mesh.ply", "npz": "coeffs.npz", "json": "result.json",
                "png": "overlay.png", "jpg": "overlay.jpg"}
OVERLAY_FORMATS = ("png", "jpg")        # the same painted overlay, two encodings
FRONT = VIEWS.index("front")
MM_PER_UNIT = 100.0           # model units are decimetres


def parse_formats(text: str) -> tuple[str, ...]:
    """"obj,ply,json" -> ("obj", "ply", "json"); raises InputError for unknown names."""

    names = tuple(dict.fromkeys(s.strip().lower() for s in str(text).split(",") if s.strip()))
    bad = [n for n in names if n not in FORMATS]
    if bad or not names:
        raise InputError(None, f"unknown output format(s) {bad or [text]}", f"choose from {','.join(FORMATS)}")
    return names


def needs_photos(formats) -> bool:
    """Whether these outputs paint on the decoded photos (the pipeline's ``keep_photos``)."""
    return any(kind in formats for kind in OVERLAY_FORMATS)


# What a file browser drops into any folder it shows (view settings): not the user's data.
OS_VIEW_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


def output_folder(out_root, name: str) -> Path:
    """``out_root/<name>``; a name that is empty or leads out of ``out_root`` (".", "..", absolute) is refused:
    the folder there is replaced whole, so such a name could replace ``out_root`` itself or a sibling."""
    relative = Path(str(name))
    if not relative.parts or relative.is_absolute() or ".." in relative.parts:
        raise InputError(None, f"triplet name {str(name)!r} is not a folder under the output folder",
                         "name each triplet with a relative folder name (as dfmvr-run names them)")
    return Path(out_root) / relative


def holds_sources(folder: Path, sources) -> list[Path]:
    """The ``sources`` (a triplet's photos) that lie inside ``folder``: replacing it would delete them."""
    where = Path(folder).resolve()
    found = []
    for source in sources:
        try:
            Path(source).resolve().relative_to(where)
        except ValueError:
            continue
        found.append(Path(source))
    return found


def already_written(out_root, triplet) -> bool:
    """--resume's test (dfmvr-run, data prepare): the triplet's folder exists and is not the one holding its
    photos (that one is refused when written, not skipped as done)."""
    try:
        folder = output_folder(out_root, triplet.name)
    except InputError:
        return False            # refused when written
    return folder.is_dir() and not holds_sources(folder, triplet.paths.values())


def _ours(name: str, replaceable: frozenset[str]) -> bool:
    # macOS writes AppleDouble "._mesh.obj" beside each file on exFAT / SMB volumes
    return name in replaceable or name in OS_VIEW_FILES or (name.startswith("._") and name[2:] in replaceable)


@contextlib.contextmanager
def staged_folder(target: Path, replaceable: frozenset[str] = frozenset(), sources=()):
    """Yield a hidden temporary folder beside ``target``; on success it replaces ``target`` whole.

    An existing ``target`` is replaced only when it holds nothing but ``replaceable`` names (the files this
    writer makes: an earlier output) and file-browser view files, and none of ``sources`` (the triplet's own
    photos, which may bear the writer's own names: data prepare's left.png); anything else is refused, naming
    the folder, before any work."""
    # the parent resolved: through "o/t/.." the earlier output moved aside and could not be found again. The
    # name is not: a link where the folder goes is replaced as a link, as before.
    target = Path(target)
    target = target.parent.resolve() / target.name
    if target.exists() and not target.is_dir():     # a user's file is never replaced by an output folder
        raise InputError(target, "a file (not an earlier output folder) is where this triplet's folder goes",
                         "move the file, or choose another --out")
    if target.is_dir():
        inside = holds_sources(target, sources)
        if inside:      # --out on the photos' own folder: the output would replace the photos
            raise InputError(target, f"is where this triplet's output goes and holds its own photo {inside[0]}; "
                             "writing the output would delete the photos", "choose another --out")
        try:
            foreign = sorted(p.name for p in target.iterdir() if not _ours(p.name, replaceable))
        except FileNotFoundError:       # another writer of this folder is swapping it right now
            foreign = []
        if foreign:
            more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
            raise InputError(target, f"this triplet's output folder already holds files dfmvr does not write there "
                             f"({', '.join(foreign[:3])}{more}); replacing the folder would delete them",
                             "move those files, or choose another --out")
    target.parent.mkdir(parents=True, exist_ok=True)
    # not mkdtemp: its 0700 would become the finished folder's mode; os.mkdir honours the umask (0755 usually)
    tmp = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:12]}"
    os.mkdir(tmp)
    try:
        yield tmp
        with _swap_lock(target.parent):
            _swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def _swap_lock(folder: Path):
    """Two writers of one output folder (two dfmvr-run into one --out) take turns at the renames: between one's
    move-aside and move-in the other's rename failed and an earlier output was left in a hidden .old-* folder.
    An advisory lock on the folder itself (no lock file to list); best effort: where flock does not exist or the
    file system refuses it on a folder, no lock."""
    try:
        import fcntl
    except ImportError:         # pragma: no cover - not POSIX
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        fd = None
    if fd is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:     # NFS / SMB (an exclusive lock wants a file open for writing), Lustre without flock
            os.close(fd)
            fd = None       # best effort: the renames go ahead unlocked, as they did before the lock
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)            # closing releases the lock


def _swap_in(tmp: Path, target: Path) -> None:
    """``tmp`` becomes ``target``; an earlier ``target`` steps aside first and comes back if the move in fails."""
    old = None
    if target.exists():     # the earlier output steps aside, and comes back if the new one cannot move in
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        try:
            os.replace(target, old / "x")
        except BaseException:
            old.rmdir()
            raise
    try:
        os.replace(tmp, target)
    except BaseException:
        if old is not None:
            os.replace(old / "x", target)
            old.rmdir()
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def pose_record(rotation: np.ndarray, translation: np.ndarray) -> dict:
    """One view's pose: Euler angles (x, y, z) rad -> pitch (x), yaw (y), roll (z) in degrees.

    rotation [3] radians (R = Rz·Ry·Rx), translation [3] model units (decimetres).
    """
    deg = np.degrees(np.asarray(rotation, np.float64))
    t = np.asarray(translation, np.float64)
    return {"yaw_deg": float(deg[1]), "pitch_deg": float(deg[0]), "roll_deg": float(deg[2]),
            "rotation_rad": [float(v) for v in rotation],
            "rotation_matrix": rotation_matrix(np.asarray(rotation)).astype(float).round(7).tolist(),
            "translation": [float(v) for v in t], "translation_mm": [float(v) for v in t * MM_PER_UNIT]}


# How far a view's yaw may stray from its slot's nominal yaw (VIEW_YAW_DEG: -45 / 0 / +45) before dfmvr-run
# asks whether the photos are in the wrong slots. The synthetic training views stray by up to 8 deg and the
# bundled demo's yaw error is ~2 deg (5 deg on photos in the wrong slots), so 30 deg flags a photo of another
# view (a front photo in a side slot is ~45 deg off, left and right swapped ~90) and lets real side photos
# turned 15 to 75 deg pass.
SLOT_YAW_TOLERANCE_DEG = 30.0


def slot_doubts(rotation: np.ndarray) -> dict[str, float]:
    """{view: predicted yaw in degrees} for the views whose yaw is more than SLOT_YAW_TOLERANCE_DEG from
    their slot's nominal yaw; ``rotation`` [3 views, 3] radians (one triplet). Meaningful for a network that
    reads the pose from the photo (the bundled demo since its heads' refit with --slot-breaks); one that
    reads it from the slot never raises a doubt."""
    yaws = np.degrees(np.asarray(rotation, np.float64)[:, 1])
    return {view: round(float(yaw), 1) for view, yaw, nominal in zip(VIEWS, yaws, VIEW_YAW_DEG)
            if abs(yaw - nominal) > SLOT_YAW_TOLERANCE_DEG}


def landmarks_on_photo(rec) -> np.ndarray:
    """Projected landmarks mapped back onto each photo: [V, 68, 2] float32 pixels (crop pixels with --aligned)."""
    crop_lm = rec.mesh.landmarks[0]
    out = []
    for v, sim in enumerate(rec.prepared.similarities):
        out.append(crop_lm[v] if sim is None else sim.inverse().apply(crop_lm[v]))
    return np.stack(out).astype(np.float32)


def _result_json(pipe, rec) -> dict:
    c = rec.coeffs
    views = {}
    detections = rec.prepared.detections
    for v, view in enumerate(VIEWS):
        views[view] = {"image": str(rec.prepared.triplet.paths[view]),
                       **pose_record(c.rotation[0, v], c.translation[0, v]),
                       # how the face was found (detector, path, box in photo pixels); null with --aligned
                       "detection": detections[v].to_dict() if detections else None}
    return {
        "triplet": rec.prepared.triplet.name,
        "model": {"id": pipe.artifact.model_id, "kind": pipe.artifact.kind, "path": str(pipe.artifact.path),
                  "variant": pipe.card.variant, "face_model": pipe.face_model_identity,
                  "camera": pipe.camera.to_dict()},
        "aligned_input": pipe.aligned,
        "device": pipe.device,
        "views": views,
        # views whose yaw is far from their slot's: photos in the wrong slots? (slot_doubts)
        "slot_doubts": slot_doubts(c.rotation[0]),
        "units": {"translation": "decimetre (model units)", "translation_mm": "millimetre", "angles": "degree"},
        "mesh": {"pose": "front", "num_vertices": int(rec.mesh.vertices.shape[2]),
                 "num_triangles": int(pipe.face_model.num_triangles)},
        "timings_ms": rec.times.to_ms(),
        # --refine N (runtime/refine.py): refined and network coefficients, weak loss before/after, seconds
        **({"refine": rec.refine} if getattr(rec, "refine", None) else {}),
    }


def _write_npz(path: Path, pipe, rec) -> None:
    blocks = {k: np.asarray(v[0], np.float32) for k, v in rec.coeffs.as_dict().items()}
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **blocks, coefficients=pipe.layout.join(rec.coeffs)[0], labels=rec.labels,
                 landmarks_crop=rec.mesh.landmarks[0], landmarks_photo=landmarks_on_photo(rec),
                 views=np.array(VIEWS),
                 # the network's own landmarks of each view (crop px), when the graph outputs them
                 **({} if rec.keypoints is None else {"keypoints_crop": rec.keypoints}))


def _front_mesh(rec) -> tuple[np.ndarray, np.ndarray]:
    verts = rec.mesh.vertices[0, FRONT]
    colors = np.clip(rec.mesh.colors[0, FRONT], 0.0, 1.0)
    return verts, colors


def write_reconstruction(pipe, rec, out_root: Path, formats) -> Path:
    """Write one triplet's selected outputs into ``out_root/<triplet name>`` (whole or nothing)."""
    from ..face import meshio

    start = time.perf_counter()
    # the CLI parses --format; through the API "json" (a string) matched by substring and ["OBJ"] wrote nothing
    formats = parse_formats(formats if isinstance(formats, str) else ",".join(map(str, formats)))
    target = output_folder(out_root, rec.prepared.triplet.name)
    with staged_folder(target, frozenset(FORMAT_FILES.values()), rec.prepared.triplet.paths.values()) as tmp:
        verts, colors = _front_mesh(rec)
        tris = pipe.face_model.triangles
        if "obj" in formats:
            meshio.write_obj(tmp / FORMAT_FILES["obj"], verts, tris, colors=colors)
        if "ply" in formats:
            meshio.write_ply(tmp / FORMAT_FILES["ply"], verts, tris, colors=colors)
        if "npz" in formats:
            _write_npz(tmp / FORMAT_FILES["npz"], pipe, rec)
        overlays = [kind for kind in OVERLAY_FORMATS if kind in formats]
        if overlays:
            from .overlay import overlay_image, write_overlay

            image = overlay_image(pipe, rec)            # painted once for both encodings
            for kind in overlays:
                write_overlay(tmp / FORMAT_FILES[kind], pipe, rec, image)
        if "json" in formats:
            # written last, so that its "write" timing covers the other files
            rec.times.write = time.perf_counter() - start
            doc = _result_json(pipe, rec)
            atomic_write_text(tmp / FORMAT_FILES["json"], json.dumps(doc, indent=2))
    return target
