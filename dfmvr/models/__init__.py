"""The DF-MVR networks (torch): involution op, parse net, MulEn-Unet, RedNet, heads, full model, variants.

Importing this package registers the ``dfmvr::Involution`` torch custom op.
"""

from .dfmvr_net import DFMVRNet, pack_views
from .involution import Involution, involution
from .variants import VARIANTS, build_model, make_card

__all__ = ["DFMVRNet", "pack_views", "Involution", "involution", "VARIANTS", "build_model", "make_card"]
