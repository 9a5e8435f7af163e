"""Evaluation over a dataset: a model (torch checkpoint or ONNX graph) against ground-truth 3D shapes.

No torch here: the ONNX path (``OnnxPredictor``) runs with ONNX Runtime through ``dfmvr.runtime``; a
torch model is scored through ``dfmvr.models.predictor.TorchPredictor`` (any callable with a ``card``
that maps normalised images to coefficients is a predictor).

Each triplet is scored with ``dfmvr.face.metrics.evaluate_reconstruction`` (NoW-style: crop by the
eye-corner radius, 7-point similarity, ICP, scan-to-mesh distances in mm) three times in one run:
- ``model``: the network given all three views;
- ``baselines.front_only``: the same network given only the front view (left/right all zeros);
- ``baselines.mean_face``: the face model's mean shape (no network at all).

Dataset layouts (one folder per triplet; ``root`` may itself be one):
- synthetic (``dfmvr data synth``): left/front/right.png + gt.npz with ``vertices`` [N, 3] (dm) on
  the face model's topology and ``landmarks3d`` [68, 3] (dm);
- real: the three aligned 224x224 images + ``scan.obj`` or ``scan.ply`` (mm, any topology) +
  scan landmarks ``scan_landmarks.{txt,pts,pp,npy}``: 7 points (``SEVEN_POINTS_IBUG`` order) or
  the 68 iBUG points, in mm.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from ..card import GRAPH_KEYPOINTS, GRAPH_OUTPUTS
from ..errors import InputError
from ..face.detector_noise import draw_landmark_noise
from ..face.geometry import face_shape
from ..face.layout import COEFFS, VIEWS
from ..face.meshio import MM_PER_MODEL_UNIT, read_landmarks, read_mesh
from ..face.metrics import (SEVEN_POINTS_IBUG, evaluate_reconstruction, paired_improvement, pose_errors,
                            shape_r2, slot_prior, summarize, translation_breakdown)
from ..face.model import MorphableModel

__all__ = ["EvalSample", "find_eval_folders", "load_eval_sample", "with_slot_order", "OnnxPredictor",
           "evaluate_dataset", "METHODS"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SCAN_LANDMARK_NAMES = ("scan_landmarks.txt", "scan_landmarks.pts", "scan_landmarks.pp", "scan_landmarks.npy")
METHODS = ("model", "front_only", "mean_face")
REFINE_LABELS = ("data", "network")     # where --refine's parse labels come from (evaluate_dataset)
REFINE_LANDMARKS = ("data", "network", "none")  # where --refine's 2D landmarks come from (evaluate_dataset)


@dataclass
class EvalSample:
    """One triplet to score. images [3, 224, 224, 3] uint8 RGB (VIEWS order); scan_vertices [M, 3] mm;
    scan_triangles [S, 3] int or None; scan_landmarks7 [7, 3] mm (``SEVEN_POINTS_IBUG`` order)."""

    name: str
    images: np.ndarray
    scan_vertices: np.ndarray
    scan_triangles: np.ndarray | None
    scan_landmarks7: np.ndarray
    true_coefficients: np.ndarray | None = None   # synthetic data: [269] in COEFFS order
    # Weak inputs for ``--refine`` (what a detector and a parser would give; on synthetic data they
    # are exact): 2D landmarks [3, 68, 2] crop pixels, their visibility [3, 68] bool, parse labels
    # [3, H, W] uint8. From landmarks.npz / labels.npz, else gt.npz; None when absent.
    landmarks: np.ndarray | None = None
    landmark_visible: np.ndarray | None = None
    labels: np.ndarray | None = None


def _image_path(folder: Path, view: str) -> Path | None:
    for s in IMAGE_SUFFIXES:
        if (folder / f"{view}{s}").is_file():
            return folder / f"{view}{s}"
    return None


def _has_a_view(folder: Path) -> bool:
    return any(_image_path(folder, v) for v in VIEWS)


def find_eval_folders(root) -> list[Path]:
    """Triplet folders under ``root`` (or ``root`` itself), sorted: every folder with an image of any view,
    so that one missing a view is refused by name when it is read, not skipped. InputError when there
    are none."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "evaluation data folder not found", "pass a folder of triplet folders")
    if _has_a_view(root):
        return [root]
    found = sorted(d for d in root.iterdir()
                   if d.is_dir() and not d.name.startswith(".") and _has_a_view(d))
    if not found:
        raise InputError(root, "no triplet folders (left/front/right images) found",
                         "create one with 'dfmvr data synth' or lay out real data as in docs/training.md")
    return found


def _read_rgb(path: Path, size: int) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(path, "cannot decode the image", "replace it with a valid PNG/JPEG")
    if img.shape[:2] != (size, size):
        raise InputError(path, f"image is {img.shape[1]}x{img.shape[0]}, expected aligned {size}x{size}",
                         "align the photos first (dfmvr-run aligns; evaluation expects aligned crops)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


WEAK_INPUT_FILES = ("gt.npz", "landmarks.npz", "labels.npz")   # later files win


def _weak_inputs(folder: Path, image_size: int) -> dict:
    """The 2D landmarks, their visibility and the parse labels of a triplet folder, where present
    (keys of EvalSample; absent or ill-shaped arrays are left out)."""
    found: dict = {}
    for name in WEAK_INPUT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            with np.load(path, allow_pickle=False) as z:
                for key, shape in (("landmarks", (3, 68, 2)), ("landmarks_visible", (3, 68)),
                                   ("labels", (3, image_size, image_size))):
                    if key in z.files and z[key].shape == shape:
                        found[key] = z[key]
        except Exception as exc:
            raise InputError(path, f"cannot read the .npz file ({exc})", "regenerate or replace it") from exc
    out = {}
    if "landmarks" in found:
        out["landmarks"] = found["landmarks"].astype(np.float32)
        out["landmark_visible"] = found.get("landmarks_visible", np.ones((3, 68), bool)).astype(bool)
    if "labels" in found:
        out["labels"] = found["labels"].astype(np.uint8)
    return out


def _refuse_triplets_without_landmarks(folders: list[Path], image_size: int) -> None:
    """``--refine`` fits the data's landmarks: a triplet without them is refused (silently fitting the
    photo alone would wreck the expression, docs/refine.md)."""
    for folder in folders:
        if "landmarks" not in _weak_inputs(folder, image_size):
            raise InputError(folder, "--refine fits the data's 2D landmarks and this triplet has none "
                             "(no landmarks.npz, no 'landmarks' in gt.npz)",
                             "add them (dfmvr data prepare writes landmarks.npz), fit the network's keypoints "
                             "(--refine-landmarks network), or fit none on purpose (--refine-landmarks none)")


def with_slot_order(sample: EvalSample, slot_order) -> EvalSample:
    """``sample`` with slot k showing view ``slot_order[k]``'s photo (and its landmarks and labels); the
    true per-view pose follows the photo (``Coefficients.with_views``). What ``--slot-order`` scores:
    photos handed over in another order than left / front / right."""
    src = list(slot_order)
    moved = {k: getattr(sample, k)[src] for k in ("images", "landmarks", "landmark_visible", "labels")
             if getattr(sample, k) is not None}
    if sample.true_coefficients is not None:
        truth = COEFFS.split(sample.true_coefficients[None]).with_views(src)
        moved["true_coefficients"] = COEFFS.join(truth)[0].astype(np.float64)
    return replace(sample, **moved)


def load_eval_sample(folder, face_model: MorphableModel, image_size: int = 224) -> EvalSample:
    """Read one triplet folder of either layout (see the module docstring)."""
    sample = _load_eval_sample(Path(folder), face_model, image_size)
    for key, value in _weak_inputs(Path(folder), image_size).items():
        setattr(sample, key, value)
    return sample


def _load_eval_sample(folder: Path, face_model: MorphableModel, image_size: int) -> EvalSample:
    paths = {v: _image_path(folder, v) for v in VIEWS}
    missing = [v for v, p in paths.items() if p is None]
    if missing:
        raise InputError(folder, f"the {', '.join(missing)} view image(s) are missing",
                         "evaluation needs left, front and right images in every triplet folder")
    images = np.stack([_read_rgb(paths[v], image_size) for v in VIEWS])
    scans = [folder / n for n in ("scan.obj", "scan.ply") if (folder / n).is_file()]
    if scans:
        verts, tris = read_mesh(scans[0])
        lm_files = [folder / n for n in SCAN_LANDMARK_NAMES if (folder / n).is_file()]
        if not lm_files:
            raise InputError(folder, "a scan without landmarks", f"add one of {', '.join(SCAN_LANDMARK_NAMES)} "
                             "(7 points in SEVEN_POINTS_IBUG order, or 68 iBUG points, in mm)")
        lm = read_landmarks(lm_files[0], num_points=None, dims=(3,))
        if lm.shape[0] == 68:
            lm = lm[list(SEVEN_POINTS_IBUG)]
        elif lm.shape[0] != 7:
            raise InputError(lm_files[0], f"{lm.shape[0]} scan landmarks, expected 7 or 68")
        return EvalSample(folder.name, images, verts, tris, lm.astype(np.float32))
    gt_path = folder / "gt.npz"
    if not gt_path.is_file():
        raise InputError(folder, "no ground truth: neither scan.obj/scan.ply nor gt.npz",
                         "add the scan and its landmarks (real data) or use 'dfmvr data synth'")
    try:
        with np.load(gt_path, allow_pickle=False) as z:
            verts, lm3d = z["vertices"], z["landmarks3d"]
            truth = np.asarray(z["coefficients"], np.float64) if "coefficients" in z.files else None
    except Exception as exc:
        raise InputError(gt_path, f"cannot read 'vertices' and 'landmarks3d' ({exc})",
                         "regenerate the triplet with 'dfmvr data synth'") from exc
    if not (np.isfinite(verts).all() and np.isfinite(lm3d).all()):
        raise InputError(gt_path, "the ground-truth vertices or 3D landmarks hold NaN or infinite values",
                         "regenerate the triplet with 'dfmvr data synth'")
    if verts.shape != (face_model.num_vertices, 3):
        raise InputError(gt_path, f"ground-truth mesh has {verts.shape[0]} vertices, the face model "
                         f"'{face_model.name}' has {face_model.num_vertices}",
                         "pass the dataset's face model (--face-model DIR/face_model.npz)")
    if truth is not None and truth.shape != (COEFFS.size,):
        truth = None        # another layout: the shape metric still applies, the coefficient one does not
    return EvalSample(folder.name, images, verts * MM_PER_MODEL_UNIT, face_model.triangles,
                      lm3d[list(SEVEN_POINTS_IBUG)] * MM_PER_MODEL_UNIT, truth)


class OnnxPredictor:
    """An exported graph through ``dfmvr.runtime``'s ONNX Runtime runner (no torch)."""

    def __init__(self, path, threads: int | None = None):
        from ..card import GRAPH_INPUT
        from ..runtime.artifacts import load_onnx_artifact, resolve_onnx
        from ..runtime.runners import OnnxrtRunner, check_graph_io

        self.artifact = load_onnx_artifact(resolve_onnx(path))        # "default": the bundled graph
        self.card = self.artifact.card
        self._input = GRAPH_INPUT
        self.runner = OnnxrtRunner(self.artifact.path, threads=threads).activate()
        try:
            check_graph_io(self.runner)
        except InputError:
            self.runner.deactivate()
            raise

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.predict(images)[0]

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """-> (coefficients [B, 269] float32, the graph's parse labels [B, 3, H, W] uint8, its keypoints
        [B, 3, 68, 2] float32 crop px or None when the graph has no such output)."""
        if np.asarray(images).dtype == np.uint8:      # silently cast, it gave coefficients off by up to 64
            raise ValueError("images are uint8 crops; the graph takes them normalised: card.normalise(crops)")
        out = self.runner.infer({self._input: np.ascontiguousarray(images, np.float32)})
        coefficients, labels = (out[name] for name in GRAPH_OUTPUTS)
        keypoints = out.get(GRAPH_KEYPOINTS)
        return (np.asarray(coefficients, np.float32), np.asarray(labels).astype(np.uint8),
                None if keypoints is None else np.asarray(keypoints, np.float32))


def _score(vertices_dm: np.ndarray, face_model: MorphableModel, sample: EvalSample, **metric) -> dict:
    r = evaluate_reconstruction(vertices_dm, face_model.triangles, face_model.keypoints[list(SEVEN_POINTS_IBUG)],
                                sample.scan_vertices, sample.scan_triangles, sample.scan_landmarks7,
                                source=sample.name, **metric)
    return {k: r[k] for k in ("mean_mm", "median_mm", "rmse_mm", "landmark_error_mm")}


def evaluate_dataset(predictor, root, face_model: MorphableModel, *, limit: int | None = None,
                     batch: int = 4, baselines: bool = True, progress: bool = False, refiner=None,
                     refine_from_mean_face: bool = False, slot_order=None, landmark_noise: float = 0.0,
                     refine_labels: str = "data", refine_landmarks: str = "data", **metric) -> dict:
    """Score ``predictor`` (and the two baselines) on every triplet under ``root``.

    predictor: callable images [B, 3, 3, H, W] float32 (normalised per ``predictor.card``) ->
    coefficients [B, 269]. ``metric`` is passed to ``evaluate_reconstruction`` (e.g. icp_iterations).
    Returns {"model": summary, "baselines": {"mean_face": summary, "front_only": summary},
    "rows": [{"name", "model": {...}, "front_only": {...}, "mean_face": {...}}], "num_triplets"};
    a summary has mean_mm, median_mm, rmse_mm (means over triplets) and num_scans. With baselines and
    two triplets or more, "model_vs": {baseline: ``paired_improvement``} says how clearly the model
    beats each baseline (mean mm per triplet, 95% interval, share of triplets). Synthetic data
    (true coefficients in every gt.npz, two triplets or more) adds "coefficient_r2": {method:
    ``dfmvr.face.metrics.shape_r2``} for the network's methods, and "pose": per-view head-pose errors
    (``dfmvr.face.metrics.pose_errors``) of the model and of the slot-prior baseline (each view slot's
    mean true pose: what a network that ignores the photo's pose would at best say).

    refiner (``--refine``): a callable (coefficients [B, 269], images [B, 3, H, W, 3] uint8,
    landmarks, landmark_visible, labels) -> an object with ``coefficients`` [B, 269], ``loss_before`` /
    ``loss_after`` [B] and ``seconds`` (``dfmvr.train.refine.Refiner``; it sees only the weak inputs
    of ``EvalSample``, never the ground truth). Each eval batch is refined as one optimisation,
    starting from the network's prediction; the result is scored as one more method, ``refined``,
    beside ``model`` (rows, summaries, ``coefficient_r2``, ``pose``, and ``refined_vs``: the paired
    gain over the network and the mean face), and ``refine`` records the mean loss before/after and
    the seconds per triplet. ``refine_from_mean_face`` adds ``refined_mean_face``: the same refinement
    started from the mean face (identity, expression, texture zeroed; the network's pose and light).

    landmark_noise (``--landmark-noise PX``): Gaussian error added to each triplet's 2D landmarks
    (``face.detector_noise``, seed 0: the draw ``dfmvr-train --landmark-noise`` makes for the same folder
    at its default ``--seed 0``), what ``--refine`` then
    fits: a detector's error on synthetic data. refine_labels (``--refine-labels``): "data" (the
    folder's labels.npz / gt.npz) or "network" (the predictor's own parse labels, as ``dfmvr-run
    --refine`` uses; the predictor needs ``predict``). refine_landmarks (``--refine-landmarks``): "data"
    (the folder's, with ``landmark_noise``) or "network" (the predictor's own keypoints, all marked
    visible, as ``dfmvr-run --refine`` fits them by default; the graph needs its ``keypoints`` output) or
    "none" (no landmark term: an ablation; ``dfmvr-run`` refuses to refine without landmarks).
    The report records the inputs under ``refine_inputs``.

    slot_order (``--slot-order``): three view indices; slot k is given view ``slot_order[k]``'s photo
    and the pose truth follows the photo (``with_slot_order``), so ``pose`` says whether the network
    reads each view's pose from the photo or from the slot. The shapes' truth does not change. Recorded
    in the report as view names. The slot prior is then each slot's mean of the moved truth: it knows
    the order, so it is a stronger baseline there than a network that ignores the photos would be.
    """
    if batch < 1 or (limit is not None and limit < 1):     # limit=0 read as "no limit"; batch=0 failed in range()
        raise ValueError(f"batch and limit must be at least 1 (limit None: every triplet), got {batch} and {limit}")
    folders = find_eval_folders(root)[:limit] if limit is not None else find_eval_folders(root)
    card = predictor.card
    card.check_face_model(face_model)    # the CLI checks (naming the file); the API did not
    size = int(card.image_size)
    mean_shape = face_model.mean_shape
    rows = []
    predicted: dict[str, list[np.ndarray]] = {}
    truths: list[np.ndarray | None] = []
    refine_log: dict[str, list] = {"loss_before": [], "loss_after": [], "seconds": [], "kept_initial": []}
    iterator = range(0, len(folders), batch)
    if progress:
        from tqdm import tqdm
        iterator = tqdm(iterator, desc="eval", unit="batch")
    if refine_labels not in REFINE_LABELS:
        raise ValueError(f"refine_labels must be one of {REFINE_LABELS}, not {refine_labels!r}")
    if refine_landmarks not in REFINE_LANDMARKS:
        raise ValueError(f"refine_landmarks must be one of {REFINE_LANDMARKS}, not {refine_landmarks!r}")
    if refine_landmarks != "data" and landmark_noise > 0:
        raise ValueError(f"landmark_noise is the data's landmarks' error: not with refine_landmarks={refine_landmarks!r}")
    landmark_weight = getattr(getattr(refiner, "weights", None), "landmark_2d", None)
    if refiner is not None and refine_landmarks == "data" and landmark_weight != 0:
        _refuse_triplets_without_landmarks(folders, size)     # all of them before the first (minutes-long) fit
    for start in iterator:
        samples = [load_eval_sample(f, face_model, size) for f in folders[start:start + batch]]
        if refine_landmarks == "none":
            for s in samples:
                s.landmarks = s.landmark_visible = None
        if landmark_noise > 0:
            for index, s in enumerate(samples, start):
                if s.landmarks is not None:
                    s.landmarks = (s.landmarks + draw_landmark_noise(s.landmarks.shape, landmark_noise, 0, index)
                                   ).astype(np.float32)
        if slot_order is not None:
            samples = [with_slot_order(s, slot_order) for s in samples]
        x = card.normalise(np.stack([s.images for s in samples]))
        labels = None
        if refiner is not None and "network" in (refine_labels, refine_landmarks):
            coeffs, network_labels, keypoints = predictor.predict(x)
            preds = {"model": coeffs}
            labels = network_labels if refine_labels == "network" else None
            if refine_landmarks == "network":
                if keypoints is None:
                    raise InputError(getattr(predictor, "source", None), "refine_landmarks 'network': the model "
                                     "predicts no keypoints", "use the data's landmarks")
                for s, points in zip(samples, keypoints):
                    s.landmarks, s.landmark_visible = points, np.ones(points.shape[:2], bool)
        else:
            preds = {"model": predictor(x)}
        if refiner is not None:
            preds["refined"] = _refine_batch(refiner, preds["model"], samples, refine_log, labels)
            if refine_from_mean_face:
                start_mean = preds["model"].copy()
                for block in ("identity", "expression", "texture"):
                    start_mean[:, COEFFS.shared_slices()[block]] = 0.0
                preds["refined_mean_face"] = _refine_batch(refiner, start_mean, samples,
                                                           {k: [] for k in refine_log}, labels)
        if baselines:
            front = np.zeros_like(x)
            front[:, VIEWS.index("front")] = x[:, VIEWS.index("front")]
            preds["front_only"] = predictor(front)
        for method, coeffs in preds.items():
            predicted.setdefault(method, []).append(coeffs)
        truths += [s.true_coefficients for s in samples]
        for i, sample in enumerate(samples):
            row = {"name": sample.name}
            for method, coeffs in preds.items():
                c = COEFFS.split(coeffs[i:i + 1])
                shape = face_shape(face_model, c.identity, c.expression)[0]
                row[method] = _score(shape, face_model, sample, **metric)
            if baselines:
                row["mean_face"] = _score(mean_shape, face_model, sample, **metric)
            rows.append(row)
    out = {"model": summarize([r["model"] for r in rows]), "num_triplets": len(rows), "rows": rows}
    if slot_order is not None:
        out["slot_order"] = [VIEWS[v] for v in slot_order]
    if refiner is not None:
        data_landmarks = "the data's" + (f", plus {landmark_noise:g} px of Gaussian error per coordinate "
                                         "(face.detector_noise, seed 0)" if landmark_noise > 0 else "")
        out["refine_inputs"] = {"landmarks": {"data": data_landmarks,
                                              "network": "the network's own keypoints (all marked visible)",
                                              "none": "none (no landmark term)"}[refine_landmarks],
                                "labels": {"data": "the data's (labels.npz, else gt.npz)",
                                           "network": "the network's own parse labels"}[refine_labels]}
        out["refined"] = summarize([r["refined"] for r in rows])
        if refine_from_mean_face:
            out["refined_mean_face"] = summarize([r["refined_mean_face"] for r in rows])
        n = max(len(rows), 1)
        out["refine"] = {"loss_before_mean": float(np.mean(refine_log["loss_before"])),
                         "loss_after_mean": float(np.mean(refine_log["loss_after"])),
                         "seconds_per_triplet": float(sum(refine_log["seconds"]) / n),
                         "loss_lower_fraction": float(np.mean(np.array(refine_log["loss_after"])
                                                              < np.array(refine_log["loss_before"]))),
                         # the fit raised the weak loss there, so the network's prediction was kept
                         "kept_initial_fraction": float(np.mean(refine_log["kept_initial"]))}
        if len(rows) >= 2:
            others = ("model", "mean_face") if baselines else ("model",)
            others += ("refined_mean_face",) if refine_from_mean_face else ()
            out["refined_vs"] = {m: paired_improvement([r["refined"] for r in rows], [r[m] for r in rows])
                                 for m in others}
    if baselines:
        out["baselines"] = {m: summarize([r[m] for r in rows]) for m in ("mean_face", "front_only")}
        if len(rows) >= 2:
            out["model_vs"] = {m: paired_improvement([r["model"] for r in rows], [r[m] for r in rows])
                               for m in ("mean_face", "front_only")}
    if len(truths) >= 2 and all(t is not None for t in truths):
        truth = np.stack(truths)
        out["coefficient_r2"] = {m: shape_r2(face_model, COEFFS.split(np.concatenate(c)), COEFFS.split(truth))
                                 for m, c in predicted.items()}
        truth_c = COEFFS.split(truth)
        pose = {}
        for m in ("model", "refined", "refined_mean_face"):
            if m in predicted:
                pred_c = COEFFS.split(np.concatenate(predicted[m]))
                pose[m] = pose_errors(pred_c, truth_c)
                # the translation error is mostly depth, and depth mostly the face's size: say so
                pose[m]["translation_breakdown"] = translation_breakdown(face_model, pred_c, truth_c,
                                                                         card.camera_obj())
        out["pose"] = {"model": pose.pop("model"), "slot_prior": pose_errors(slot_prior(truth_c), truth_c), **pose}
    return out


def _refine_batch(refiner, coeffs: np.ndarray, samples: list[EvalSample], log: dict,
                  network_labels: np.ndarray | None = None) -> np.ndarray:
    """One eval batch through ``refiner`` with the samples' weak inputs only (``network_labels``
    [B, 3, H, W]: the network's parse labels instead of the samples'); returns [B, 269]."""
    n, v = len(samples), samples[0].images.shape[0]
    size = samples[0].images.shape[1]
    landmarks, visible = np.zeros((n, v, 68, 2), np.float32), np.zeros((n, v, 68), bool)
    labels = np.zeros((n, v, size, size), np.uint8)
    for i, s in enumerate(samples):
        if s.landmarks is not None:
            landmarks[i], visible[i] = s.landmarks, s.landmark_visible
        if s.labels is not None:
            labels[i] = s.labels
    if network_labels is not None:
        labels = network_labels
    elif not any(s.labels is not None for s in samples):
        labels = None
    result = refiner(coeffs, np.stack([s.images for s in samples]), landmarks, visible, labels)
    log["loss_before"] += [float(x) for x in result.loss_before]
    log["loss_after"] += [float(x) for x in result.loss_after]
    log["seconds"].append(float(result.seconds))
    log["kept_initial"] += [bool(x) for x in result.kept_initial]
    return np.asarray(result.coefficients, np.float32)
