"""dfmvr.synth: synthesis in torch -- the morphable model, the differentiable renderer, synthetic data.

- ``face_torch``: the batched torch mirror of ``dfmvr.face.geometry`` (``FaceModelTorch``);
- ``render`` / ``render_nvdiffrast``: the differentiable rasterizer (pure torch, or nvdiffrast on CUDA);
- ``dataset``: the synthetic multi-view dataset (``TripletGenerator``, ``write_dataset``; ``dfmvr data synth``).

Used by the training losses and refinement (``dfmvr.train``) and by the INT8 calibration
(``dfmvr.export``). It imports neither ``dfmvr.train`` nor ``dfmvr.models`` (tests/test_layering.py).
"""
