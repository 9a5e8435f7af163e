"""Fold the mean-size projection (``dfmvr.face.size``) into a network's identity head.

The identity head is a 1x1 conv (``rednet_fc.conv2_id``, every design): identity = W x + b. Setting
its output to the mean face's size, P (W x + b), is the conv with weight P W and bias P b, so the
network, its checkpoint and its exported graph keep their shape (``dfmvr convert mean-size``).
"""

from __future__ import annotations

import numpy as np
import torch

from ..face.model import MorphableModel
from ..face.size import mean_size_projection

__all__ = ["MEAN_SIZE_KEY", "fold_mean_size"]

MEAN_SIZE_KEY = "identity_size"      # the card's provenance entry that records the fold


@torch.no_grad()
def fold_mean_size(model, face_model: MorphableModel) -> dict:
    """Fold the projection into ``model``'s identity head in place; -> the provenance record.

    Applying it twice changes nothing (P² = P)."""
    head = model.rednet_fc.conv2_id
    projection = mean_size_projection(face_model)
    if head.out_channels != projection.matrix.shape[0]:
        raise ValueError(f"the identity head has {head.out_channels} outputs; the face model's identity "
                         f"basis has {projection.matrix.shape[0]}")
    matrix = torch.from_numpy(projection.matrix)
    weight = head.weight.double().flatten(1)                              # [K, D]
    head.weight.copy_((matrix @ weight).reshape(head.weight.shape).to(head.weight.dtype))
    if head.bias is not None:
        head.bias.copy_((matrix @ head.bias.double()).to(head.bias.dtype))
    return {"set_to": "the mean face's", "by": "dfmvr convert mean-size",
            "scaling_in_identity_basis": round(float(np.clip(projection.in_basis, 0.0, 1.0)), 6)}
