"""The reconstruction pipeline: read triplet -> align -> normalise -> network -> assemble -> write.

Each stage is a method, so ``dfmvr bench`` can time them one by one; ``run`` chains them for many
triplets, batching the network, and records per-stage wall times (``StageTimes``, seconds).
Stages shared by a batch (normalise, network, assembly) are charged to each triplet as the batch
time divided by the batch size. In ``run`` decode + align of the next batch and writing of the
previous one overlap the network of the current one (threads; ``overlap=False`` or
``DFMVR_NO_OVERLAP=1`` to switch it off), so overlapped stage times include the time they waited for a core.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..card import GRAPH_INPUT, GRAPH_KEYPOINTS, GRAPH_OUTPUTS
from ..errors import InputError, UnavailableError
from ..face.align import align_image, five_points_from_68
from ..face.geometry import MeshResult
from ..face.layout import VIEWS, Coefficients
from .assembly import CpuMeshAssembler
from .artifacts import Artifact, load_artifact, load_face_model
from .inputs import Triplet, TripletProblem, decode_image
from .runners import Runner, check_graph_io, runner_for

__all__ = ["StageTimes", "Prepared", "prepare_triplet", "Reconstruction", "RunSummary", "Pipeline", "DEVICES"]

DEVICES = ("cpu", "cuda")


@dataclass
class StageTimes:
    """Wall time per stage in seconds (for one triplet, or summed over many)."""

    decode_align: float = 0.0
    normalise: float = 0.0
    network: float = 0.0
    assembly: float = 0.0
    write: float = 0.0

    @property
    def total(self) -> float:
        return sum(getattr(self, f.name) for f in fields(self))

    def add(self, other: "StageTimes") -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def to_ms(self) -> dict[str, float]:
        out = {f.name: round(getattr(self, f.name) * 1e3, 3) for f in fields(self)}
        out["total"] = round(self.total * 1e3, 3)
        return out


@dataclass
class Prepared:
    """A decoded, aligned triplet.

    crops        [V, S, S, 3] uint8 RGB network crops (S = card.image_size), views in VIEWS order
    photos       the decoded photos (RGB uint8 [H, W, 3]) for the overlay, or None if not kept
    similarities per view, photo -> crop Similarity (None with --aligned: the crop is the photo)
    detections   per view, the ``detect.Detection`` (landmarks, box, and the path that found the face:
                 ``detect.DETECTION_PATHS``); None with --aligned
    """

    triplet: Triplet
    crops: np.ndarray
    photos: list | None
    similarities: list
    times: StageTimes = field(default_factory=StageTimes)
    detections: list | None = None

    def detection_paths(self) -> dict[str, str]:
        """{view: path} of the views whose face was not found by the first try (``hog``): the fallbacks
        taken (empty with --aligned or when every view was found directly)."""
        if not self.detections:
            return {}
        return {view: d.path for view, d in zip(VIEWS, self.detections) if d.path not in ("hog", "face-alignment")}


@dataclass
class Reconstruction:
    """One triplet's result (batch axis of 1 on coeffs and mesh)."""

    prepared: Prepared
    coeffs: Coefficients
    mesh: MeshResult
    labels: np.ndarray           # [V, S, S] uint8 parse classes
    times: StageTimes
    keypoints: np.ndarray | None = None   # [V, 68, 2] crop px: the graph's keypoints output, if it has one


@dataclass
class RunSummary:
    done: list = field(default_factory=list)        # (name, output folder, StageTimes)
    failed: list = field(default_factory=list)      # TripletProblem
    fallbacks: dict = field(default_factory=dict)   # done triplet name -> {view: detection path}, fallbacks only
    slot_doubts: dict = field(default_factory=dict)  # done triplet name -> {view: yaw}, outputs.slot_doubts
    wall: float = 0.0                               # seconds for the whole run
    times: StageTimes = field(default_factory=StageTimes)   # summed over done triplets


def prepare_triplet(triplet: Triplet, size: int, detector=None, keep_photos: bool = False) -> Prepared:
    """Decode a triplet's photos and align them to ``size`` x ``size`` crops (``Pipeline.prepare``, and
    ``dfmvr data prepare``). ``detector``: None when the photos are already aligned crops (each must
    then be ``size`` x ``size``; InputError naming the file otherwise); else the face and its 68
    landmarks are found in each view (``detect.detect_triplet``: a view where no detector finds the
    face is covered from the other views) and the crop is aligned on their five points."""
    start = time.perf_counter()
    missing = [view for view in VIEWS if view not in triplet.paths]
    if missing:     # through the API (the CLI's discovery never makes one): a KeyError stopped the whole run
        raise InputError(None, f"triplet '{triplet.name}' has no {' / '.join(missing)} photo",
                         f"give Triplet.paths a path for each of {', '.join(VIEWS)}")
    paths = [triplet.paths[view] for view in VIEWS]
    images = [decode_image(path) for path in paths]
    detections = None
    if detector is None:
        for path, image in zip(paths, images):
            if image.shape[:2] != (size, size):
                raise InputError(path, f"image is {image.shape[1]}x{image.shape[0]} pixels; with --aligned "
                                 f"every view must be a {size}x{size} crop",
                                 "drop --aligned to detect and align the face automatically")
        crops, sims = images, [None] * len(images)
    else:
        from .detect import detect_triplet

        # one triplet at a time: a view without a face found is covered from the other views
        detections = detect_triplet(detector, images, paths)
        crops, sims = [], []
        for path, image, found in zip(paths, images, detections):
            crop, sim = align_image(image, five_points_from_68(found.landmarks), size=size, source=path)
            crops.append(crop)
            sims.append(sim)
    times = StageTimes(decode_align=time.perf_counter() - start)
    return Prepared(triplet, np.stack(crops), images if keep_photos else None, sims, times, detections)


class Pipeline:
    """Everything needed to turn triplets into reconstructions, activated once.

    artifact   the network and its card (normalisation, camera, layout, face-model identity)
    face_model a MorphableModel that matches the card
    runner     a Runner for the artifact (activated by ``__enter__`` / ``activate``)
    aligned    True: inputs are already S x S crops; False: detect + align with ``detector``
    device     "cpu" (numpy assembly) or "cuda" (CUDA mesh kernel)
    keep_photos keep decoded photos for overlays (needed by the "png" and "jpg" formats)
    """

    def __init__(self, artifact: Artifact, face_model, runner: Runner, *, aligned: bool = False,
                 detector=None, device: str = "cpu", keep_photos: bool = True):
        if device not in DEVICES:
            raise InputError(None, f"unknown device '{device}'", f"choose one of {', '.join(DEVICES)}")
        if not aligned and detector is None:
            raise ValueError("a detector is needed unless the inputs are aligned")
        artifact.card.check_face_model(face_model)      # from_options checks it naming the file; the API did not
        self.artifact, self.card, self.face_model, self.runner = artifact, artifact.card, face_model, runner
        self.aligned, self.detector, self.device, self.keep_photos = aligned, detector, device, keep_photos
        self.face_model_identity = face_model.identity()     # hashes every array: compute once
        self.camera = self.card.camera_obj()
        self.layout = self.card.layout_obj()
        self.size = int(self.card.image_size)
        self._gpu_assembler = None
        self._cpu_assembler = None      # built on first use: it lays the bases out once
        self._overlay_tris = None

    @property
    def overlay_triangles(self) -> np.ndarray:
        """The (simplified) triangles that overlay.png paints, computed once per pipeline."""
        if self._overlay_tris is None:
            from .overlay import overlay_triangles

            self._overlay_tris = overlay_triangles(self.face_model.mean_shape, self.face_model.triangles)
        return self._overlay_tris

    @classmethod
    def from_options(cls, onnx=None, engine=None, face_model=None, aligned=False, detector="dlib",
                     device="cpu", threads=None, keep_photos=True, backend="onnxruntime") -> "Pipeline":
        """Load artefact, card and face model and build the runner and detector (CLI options).
        backend: the runner of an ONNX graph, "onnxruntime" or "openvino" (``runner_for``)."""
        artifact = load_artifact(onnx=onnx, engine=engine)
        model = load_face_model(face_model, artifact.card)
        det = None
        if not aligned:
            from .detect import make_detector

            det = make_detector(detector, device=device)
        runner = runner_for(artifact, threads=threads, device="cuda" if device == "cuda" else "cpu", backend=backend)
        return cls(artifact, model, runner, aligned=aligned, detector=det, device=device,
                   keep_photos=keep_photos)

    # --- lifecycle -------------------------------------------------------------------------
    def activate(self) -> "Pipeline":
        self.runner.activate()
        try:
            check_graph_io(self.runner)
        except InputError:
            self.runner.deactivate()      # a TensorRT runner holds a CUDA context
            raise
        try:        # the mesh writers' trimesh takes ~1-2 s to import: pay it here, not in the first write
            import trimesh  # noqa: F401
        except ImportError:  # pragma: no cover - a base dependency
            pass
        if self.device == "cuda" and self._gpu_assembler is None:
            try:
                from ..kernels.mesh_gpu import CudaMeshAssembler
            except ImportError as exc:
                raise UnavailableError(f"--device cuda needs the CUDA mesh kernel ({exc}) -- use --device cpu") from exc
            self._gpu_assembler = CudaMeshAssembler(self.face_model, self.camera)
        return self

    def deactivate(self) -> None:
        self.runner.deactivate()
        if self._gpu_assembler is not None:
            self._gpu_assembler.close()      # frees the bases and buffers on the device
            self._gpu_assembler = None

    def __enter__(self):
        return self.activate()

    def __exit__(self, *exc):
        self.deactivate()

    def check_batch(self, batch: int) -> None:
        """InputError (exit 2) naming the engine's optimisation profile when ``batch`` triplets per network
        call is outside it: ``TensorrtRunner.check_batch`` reads the profile from the engine's card (no
        TensorRT call). Runners without a profile (ONNX Runtime: dynamic batch) accept any batch."""
        check = getattr(self.runner, "check_batch", None)
        if check is not None:
            check(int(batch))

    # --- stages ----------------------------------------------------------------------------
    def prepare(self, triplet: Triplet) -> Prepared:
        """Stage 1, decode + align: the three photos -> crops [V, S, S, 3] uint8."""
        return prepare_triplet(triplet, self.size, None if self.aligned else self.detector, self.keep_photos)

    def normalise(self, crops: np.ndarray) -> np.ndarray:
        """Stage 2: uint8 crops [B, V, S, S, 3] -> graph input [B, V, 3, S, S] float32 (card mean/std)."""
        return self.card.normalise(crops)

    def infer(self, images: np.ndarray) -> tuple[Coefficients, np.ndarray, np.ndarray | None]:
        """Stage 3, the network: [B, V, 3, S, S] -> (Coefficients batch B, labels [B, V, S, S] uint8,
        keypoints [B, V, K, 2] float32 crop px, or None when the graph has no such output)."""
        out = self.runner.infer({GRAPH_INPUT: images})
        flat = np.asarray(out[GRAPH_OUTPUTS[0]], np.float32)
        if flat.ndim != 2 or flat.shape[0] != images.shape[0]:
            raise InputError(self.artifact.path, f"network output '{GRAPH_OUTPUTS[0]}' has shape {flat.shape}, "
                             f"expected [{images.shape[0]}, {self.layout.size}]", "re-export the model")
        labels = out.get(GRAPH_OUTPUTS[1])
        labels = (np.zeros(images.shape[:2] + images.shape[3:], np.uint8) if labels is None
                  else np.asarray(labels).astype(np.uint8, copy=False))
        keypoints = out.get(GRAPH_KEYPOINTS)
        if keypoints is not None:
            keypoints = np.asarray(keypoints, np.float32)
            if keypoints.shape[:2] != images.shape[:2] or keypoints.ndim != 4 or keypoints.shape[-1] != 2:
                raise InputError(self.artifact.path, f"network output '{GRAPH_KEYPOINTS}' has shape "
                                 f"{keypoints.shape}, expected [{images.shape[0]}, {images.shape[1]}, K, 2]",
                                 "re-export the model")
        return self.layout.split(flat), labels, keypoints

    def assemble(self, coeffs: Coefficients) -> MeshResult:
        """Stage 4: coefficients -> posed, lit mesh per view (CpuMeshAssembler, equal to
        ``geometry.assemble_mesh``; the CUDA kernel with --device cuda)."""
        if self._gpu_assembler is not None:
            return self._gpu_assembler.assemble(coeffs)
        if self._cpu_assembler is None:
            self._cpu_assembler = CpuMeshAssembler(self.face_model, self.camera)
        return self._cpu_assembler.assemble(coeffs)

    def reconstruct(self, prepared: list[Prepared]) -> list[Reconstruction]:
        """Stages 2-4 for a batch of prepared triplets (one network call)."""
        n = len(prepared)
        if n == 0:
            return []
        t0 = time.perf_counter()
        images = self.normalise(np.stack([p.crops for p in prepared]))
        t1 = time.perf_counter()
        coeffs, labels, keypoints = self.infer(images)
        t2 = time.perf_counter()
        mesh = self.assemble(coeffs)
        t3 = time.perf_counter()
        out = []
        for i, p in enumerate(prepared):
            times = StageTimes(decode_align=p.times.decode_align, normalise=(t1 - t0) / n,
                               network=(t2 - t1) / n, assembly=(t3 - t2) / n)
            one = MeshResult(**{f.name: getattr(mesh, f.name)[i:i + 1] for f in fields(MeshResult)})
            out.append(Reconstruction(p, coeffs.select(i), one, labels[i], times,
                                      None if keypoints is None else keypoints[i]))
        return out

    def write(self, rec: Reconstruction, out_root, formats) -> Path:
        """Stage 5: the triplet's output folder ``out_root/<name>``, written as a whole or not at all."""
        from .outputs import write_reconstruction

        start = time.perf_counter()
        folder = write_reconstruction(self, rec, Path(out_root), formats)
        rec.times.write = time.perf_counter() - start
        return folder

    # --- many triplets ---------------------------------------------------------------------
    def run(self, triplets: Iterable[Triplet], out_root, formats, batch: int = 1,
            problems: Iterable[TripletProblem] = (), progress: Callable | None = None,
            overlap: bool | None = None) -> RunSummary:
        """Reconstruct every triplet; bad ones are recorded in the summary while the rest go on.

        progress(name, ok) is called once per triplet (for a progress bar). A batch the engine's
        optimisation profile cannot take (``check_batch``, with the largest call this run makes:
        ``min(batch, len(triplets))``) is an InputError before the first triplet is read.

        overlap (default: on, unless the environment sets ``DFMVR_NO_OVERLAP=1``): a bounded pipeline of
        three threads -- decode + align of batch i+1 and writing of batch i-1 run while the network
        (and mesh assembly) of batch i runs in the calling thread; ONNX Runtime, OpenCV and numpy
        release the GIL. At most one batch waits at each stage. Each triplet's folder is still
        written whole or not at all, and the summary (``done``, ``failed``, ``progress`` calls) comes
        in the same order as without overlap: one writer thread takes the batches in input order.
        """
        from .outputs import slot_doubts

        summary = RunSummary(failed=list(problems))
        start = time.perf_counter()
        triplets = list(triplets)
        if triplets:    # the largest network call of this run, refused before any detection or decoding
            self.check_batch(min(max(1, batch), len(triplets)))
        if overlap is None:
            overlap = os.environ.get("DFMVR_NO_OVERLAP", "").strip().lower() in ("", "0", "false", "no")
        size = max(1, batch)
        groups = [triplets[lo:lo + size] for lo in range(0, len(triplets), size)]

        def prepare_group(group):           # stage 1 of a batch: (prepared triplets, their failures)
            ready, failed = [], []
            for t in group:
                try:
                    ready.append(self.prepare(t))
                except InputError as exc:
                    failed.append(TripletProblem(t.name, exc))
            return ready, failed

        def write_group(failed, recs):      # the only code that touches the summary: one thread, in order
            for problem in failed:
                summary.failed.append(problem)
                if progress:
                    progress(problem.name, False)
            for rec in recs:
                name = rec.prepared.triplet.name
                try:
                    folder = self.write(rec, out_root, formats)
                except (InputError, OSError, ValueError) as exc:
                    # ValueError: the mesh writers refuse non-finite vertices; the input was finite
                    # (normalised uint8), so then the network is at fault: name it, not the output folder
                    err = (exc if isinstance(exc, InputError) else
                           InputError(Path(out_root) / name, f"cannot write outputs ({exc})")
                           if np.isfinite(rec.mesh.vertices).all() else
                           InputError(None, f"{name}: its refinement diverged (non-finite coefficients)",
                                      "lower --refine-landmark-weight, or run without --refine")
                           if getattr(rec, "refine", None) is not None else
                           InputError(self.artifact.path, f"{name}: the network's output for this triplet is "
                                      "not finite; its weights are damaged or diverged",
                                      "re-export the model with 'dfmvr-export', or restore the file"))
                    summary.failed.append(TripletProblem(name, err))
                    if progress:
                        progress(name, False)
                    continue
                summary.done.append((name, folder, rec.times))
                fallbacks = rec.prepared.detection_paths()
                if fallbacks:
                    summary.fallbacks[name] = fallbacks
                doubts = slot_doubts(rec.coeffs.rotation[0])
                if doubts:
                    summary.slot_doubts[name] = doubts
                summary.times.add(rec.times)
                if progress:
                    progress(name, True)

        if not overlap or len(groups) < 2:
            for group in groups:
                ready, failed = prepare_group(group)
                write_group(failed, self.reconstruct(ready) if ready else [])
        else:
            self._run_overlapped(groups, prepare_group, write_group)
        summary.wall = time.perf_counter() - start
        return summary

    def _run_overlapped(self, groups, prepare_group, write_group) -> None:
        """prepare (thread) -> network + assembly (this thread) -> write (thread), one batch in each."""
        prep_pool = ThreadPoolExecutor(1, thread_name_prefix="dfmvr-prepare")
        write_pool = ThreadPoolExecutor(1, thread_name_prefix="dfmvr-write")
        writing = None
        try:
            preparing = prep_pool.submit(prepare_group, groups[0])
            for i in range(len(groups)):
                ready, failed = preparing.result()
                if i + 1 < len(groups):
                    preparing = prep_pool.submit(prepare_group, groups[i + 1])
                recs = self.reconstruct(ready) if ready else []
                if writing is not None:
                    writing.result()            # bounded: batch i waits until batch i-1 is written
                writing = write_pool.submit(write_group, failed, recs)
            writing.result()
        finally:
            # on an error (network, an unexpected exception in a stage): no new batch starts; the
            # batch being written finishes (its folders are whole), then the error propagates
            prep_pool.shutdown(wait=True, cancel_futures=True)
            write_pool.shutdown(wait=True, cancel_futures=True)
