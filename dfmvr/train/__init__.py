"""dfmvr.train: weakly supervised training -- losses, the trainer and its dataset, the LR schedule,
precise BN, the parse-net stage, and per-triplet refinement (the training loss at inference).

The networks and checkpoints live in ``dfmvr.models``, rendering and synthetic data in ``dfmvr.synth``.
"""
