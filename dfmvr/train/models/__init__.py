"""The DF-MVR networks (torch): involution op, parse net, MulEn-Unet, RedNet, heads, full model, variants."""
