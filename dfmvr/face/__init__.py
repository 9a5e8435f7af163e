"""dfmvr.face: the numpy reference of all face maths (no torch). Import submodules directly."""
