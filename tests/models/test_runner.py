"""dfmvr.models.runner.TorchRunner: the torch model in the runtime runners' family (issue 20).

Real: torch, the runner, ``dfmvr.export.parity.RunnerCall``. Stand-in: a two-line module with the
network's signature (images -> (coefficients, labels)) instead of a DFMVRNet, so the lifecycle is
tested in milliseconds; the real network goes through this runner in tests/export/test_export_tiny.py.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dfmvr.card import GRAPH_INPUT, GRAPH_OUTPUTS  # noqa: E402
from dfmvr.runtime.runners import Runner  # noqa: E402
from dfmvr.models.runner import TorchRunner  # noqa: E402


class StandInNet(torch.nn.Module):
    """images [B, 3, 3, S, S] -> (coefficients [B, 2], labels [B, 3, S, S] int64), like DFMVRNet."""

    def __init__(self):
        super().__init__()
        self.dropout = torch.nn.Dropout(0.5)       # makes train / eval mode visible in the output
        self.seen_training: list[bool] = []

    def forward(self, images):
        self.seen_training.append(self.training)
        means = self.dropout(images.mean(dim=(2, 3, 4)))[:, :2].double()
        labels = (images[:, :, 0] > 0).long() * 3
        return means, labels


def test_torch_runner_has_the_runtime_runners_lifecycle_and_the_graph_signature():
    net = StandInNet().train()
    runner = TorchRunner(net)
    assert isinstance(runner, Runner) and runner.name == "torch"
    images = np.ones((2, 3, 3, 4, 4), np.float32)
    images[1, 2] = 0.0
    with pytest.raises(RuntimeError, match="not active"):
        runner.infer({GRAPH_INPUT: images})
    with runner:
        assert not net.training                     # eval on activation
        out = runner.infer({GRAPH_INPUT: images})
        assert runner.last_inference_time() is not None
    assert net.training                             # given back in the mode it came in
    assert net.seen_training == [False]
    assert set(out) == set(GRAPH_OUTPUTS)
    coefficients, labels = out[GRAPH_OUTPUTS[0]], out[GRAPH_OUTPUTS[1]]
    assert coefficients.dtype == np.float32 and coefficients.shape == (2, 2)
    np.testing.assert_array_equal(coefficients, 1.0)    # no dropout in eval mode
    assert labels.dtype == np.uint8 and labels.shape == (2, 3, 4, 4)
    assert labels[0].min() == 3 and labels[1, 2].max() == 0


def test_an_eval_model_stays_eval_and_a_missing_input_is_named():
    from dfmvr.errors import InputError

    net = StandInNet().eval()
    with TorchRunner(net) as runner:
        with pytest.raises(InputError, match=f"'{GRAPH_INPUT}' was not fed"):
            runner.infer({"other": np.zeros((1, 3, 3, 4, 4), np.float32)})
    assert not net.training


def test_parity_adapts_it_like_the_runtime_runners():
    pytest.importorskip("onnx")
    from dfmvr.export import parity

    assert not hasattr(parity, "TorchRunner")      # one home: dfmvr.models.runner
    call = parity.RunnerCall(TorchRunner(StandInNet()))
    coefficients, labels, keypoints = call(np.ones((1, 3, 3, 4, 4), np.float64))   # cast to float32 on the way in
    assert coefficients.shape == (1, 2) and labels.dtype == np.uint8 and keypoints is None
    call.close()
    assert not call.runner.is_active


class StandInNetWithKeypoints(StandInNet):
    """A network that predicts landmarks: ``forward_with_keypoints`` adds [B, 3, 68, 2] px."""

    predicts_keypoints = True

    def forward_with_keypoints(self, images):
        coefficients, labels = self(images)
        points = images[:, :, 0, :1, :1].expand(-1, -1, 68, 2) * 10.0
        return coefficients, labels, points


def test_a_network_with_keypoints_gets_the_graphs_third_output():
    pytest.importorskip("onnx")
    from dfmvr.card import GRAPH_KEYPOINTS
    from dfmvr.export import parity

    images = np.full((2, 3, 3, 4, 4), 0.5, np.float32)
    with TorchRunner(StandInNetWithKeypoints()) as runner:
        out = runner.infer({GRAPH_INPUT: images})
    assert out[GRAPH_KEYPOINTS].shape == (2, 3, 68, 2) and out[GRAPH_KEYPOINTS].dtype == np.float32
    np.testing.assert_allclose(out[GRAPH_KEYPOINTS], 5.0)
    _, _, keypoints = parity.RunnerCall(TorchRunner(StandInNetWithKeypoints()))(images)
    np.testing.assert_allclose(keypoints, out[GRAPH_KEYPOINTS], atol=1e-6)
