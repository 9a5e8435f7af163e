"""DF-MVR's training losses, each its own function (see ``docs/training.md``).

photo: label-weighted photometric loss; mask: parse-consistency loss through the frozen parse net;
landmarks: 2D (weighted) and 3D (7-point aligned) landmark losses; regularizers: coefficient, gamma
and albedo-reflectance regularisers; prdl: part re-projection distance loss; total: the weights
and their combination (``TrainingLoss``).
"""

from .landmarks import landmark_2d_loss, landmark_3d_loss, landmark_weights, similarity_transform
from .mask import mask_loss
from .photo import photo_weight_map, photometric_loss
from .prdl import PRDL, PRDLConfig
from .regularizers import coefficient_regularizer, gamma_regularizer, reflectance_regularizer
from .total import LossWeights, TrainingLoss

__all__ = ["photo_weight_map", "photometric_loss", "mask_loss", "landmark_weights", "landmark_2d_loss",
           "landmark_3d_loss", "similarity_transform", "coefficient_regularizer", "gamma_regularizer",
           "reflectance_regularizer", "PRDL", "PRDLConfig", "LossWeights", "TrainingLoss"]
