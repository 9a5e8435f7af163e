"""Triplets with their slots broken: slot k shows the photo of another view, and the per-view pose
truth follows the photo.

Training only ever shows each slot its own side, so a network (and above all a closed-form refit of
its heads) learns the slot as a pose cue and gives a frontal photo put in the left slot the left
slot's yaw (docs/findings.md). Rows like these teach the heads to read the pose from the photo:
``dfmvr-train --stage heads --slot-breaks``, and scripts/slot_break_probe.py, which measured it.
"""

from __future__ import annotations

import numpy as np
import torch

from ..face.layout import COEFFS

IDENTITY_MAPPING = (0, 1, 2)


class SlotBroken:
    """A TripletDataset whose slot k shows the photo of view ``sources[i][k]``; pose truth follows."""

    def __init__(self, base, sources: list[tuple[int, int, int]]):
        if len(sources) > len(base):
            raise ValueError(f"{len(sources)} slot mappings for {len(base)} triplets")
        self.base, self.sources, self.root = base, sources, base.root

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> dict:
        item, src = dict(self.base[i]), list(self.sources[i])
        item["images"] = item["images"][src]
        truth = COEFFS.split(item["coefficients"].numpy()[None]).with_views(src)
        item["coefficients"] = torch.from_numpy(COEFFS.join(truth)[0])
        return item


def random_breaks(n: int, seed: int) -> list[tuple[int, int, int]]:
    """``n`` slot mappings drawn uniformly (repeats allowed: one photo in two slots), never the
    convention itself."""
    rng, out = np.random.default_rng(seed), []
    while len(out) < n:
        sources = tuple(int(v) for v in rng.integers(0, 3, size=3))
        if sources != IDENTITY_MAPPING:
            out.append(sources)
    return out


def held_out_orders(n: int) -> dict[str, list[tuple[int, int, int]] | None]:
    """The slot orders the probes score ``n`` held-out triplets in (None: as they are)."""
    return {"as_is": None, "front_photo_in_every_slot": [(1, 1, 1)] * n, "left_right_swapped": [(2, 1, 0)] * n,
            "random_breaks": random_breaks(n, 3)}
