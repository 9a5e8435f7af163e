"""The dfmvr::Involution custom op against the numpy reference: values, gradients, export, module."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dfmvr.kernels.op import INVOLUTION, involution_output_size, involution_reference
from dfmvr.models.involution import Involution, involution, involution_unfold


def _inputs(b, c, h, w, k, s, g, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ho, wo = involution_output_size(h, k, s), involution_output_size(w, k, s)
    x = torch.randn(b, c, h, w, generator=gen, dtype=dtype)
    wt = torch.randn(b, g * k * k, ho, wo, generator=gen, dtype=dtype)
    return x, wt


@pytest.mark.parametrize("k", [3, 7])
@pytest.mark.parametrize("s", [1, 2])
@pytest.mark.parametrize("h,w", [(9, 10), (14, 14)])
def test_values_match_numpy_reference(k, s, h, w):
    x, wt = _inputs(2, 32, h, w, k, s, 2, torch.float32)
    y = involution(x, wt, k, s, 2)
    ref = involution_reference(x.numpy(), wt.numpy(), k, s, 2)
    assert y.shape == ref.shape == (2, 32, involution_output_size(h, k, s), involution_output_size(w, k, s))
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(involution_unfold(x, wt, k, s, 2).numpy(), ref, rtol=1e-5, atol=1e-5)


def test_op_is_registered_under_the_shared_name():
    assert INVOLUTION.qualname == "dfmvr::Involution"
    op = torch.ops.dfmvr.Involution.default
    x, wt = _inputs(1, 16, 6, 6, 3, 1, 1, torch.float64)
    np.testing.assert_allclose(op(x, wt, 3, 1, 1).numpy(), involution_reference(x.numpy(), wt.numpy(), 3, 1, 1))


@pytest.mark.parametrize("k,s", [(3, 1), (3, 2), (7, 1), (7, 2)])
def test_gradients_gradcheck_float64(k, s):
    # Full Jacobians on small inputs (k=7 needs 49 taps per entry, so its input is smaller; the
    # finite-difference test below covers k=7 at a larger size too).
    h, w = (5, 6) if k == 3 else (3, 4)
    x, wt = _inputs(1, 4, h, w, k, s, 2, torch.float64, seed=k + s)
    x.requires_grad_(True)
    wt.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: involution(a, b, k, s, 2), (x, wt))


@pytest.mark.parametrize("k,s", [(3, 1), (3, 2), (7, 1), (7, 2)])
def test_gradients_match_numpy_finite_differences_of_reference(k, s):
    # Independent of torch autograd: central differences of the numpy reference for a few entries.
    x, wt = _inputs(1, 4, 5, 6, k, s, 2, torch.float64, seed=3)
    x.requires_grad_(True)
    wt.requires_grad_(True)
    gy = torch.randn(1, 4, involution_output_size(5, k, s), involution_output_size(6, k, s), dtype=torch.float64)
    (involution(x, wt, k, s, 2) * gy).sum().backward()
    xn, wn, gyn, eps = x.detach().numpy(), wt.detach().numpy(), gy.numpy(), 1e-6

    def loss(xa, wa):
        return float((involution_reference(xa, wa, k, s, 2) * gyn).sum())

    rng = np.random.default_rng(0)
    for arr, grad in ((xn, x.grad.numpy()), (wn, wt.grad.numpy())):
        for _ in range(6):
            idx = tuple(int(rng.integers(n)) for n in arr.shape)
            plus, minus = arr.copy(), arr.copy()
            plus[idx] += eps
            minus[idx] -= eps
            fd = (loss(plus, wn) - loss(minus, wn)) / (2 * eps) if arr is xn else \
                 (loss(xn, plus) - loss(xn, minus)) / (2 * eps)
            assert abs(fd - grad[idx]) < 1e-6, (idx, fd, grad[idx])


def test_bad_kernel_shape_is_refused():
    x, wt = _inputs(1, 16, 8, 8, 3, 1, 1, torch.float32)
    with pytest.raises(ValueError, match="expected"):
        involution(x, wt[:, :5], 3, 1, 1)


def test_fake_impl_gives_shapes_without_data():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(2, 32, 56, 56)
        wt = torch.empty(2, 2 * 49, 28, 28)
        y = involution(x, wt, 7, 2, 2)
    assert tuple(y.shape) == (2, 32, 28, 28)


def test_involution_module_is_traceable_by_torch_export_with_dynamic_shapes():
    torch.manual_seed(0)
    m = Involution(32, 7, 2).eval()
    batch, half = torch.export.Dim("batch", max=8), torch.export.Dim("half", min=2, max=64)
    ep = torch.export.export(m, (torch.randn(2, 32, 16, 16),),
                             dynamic_shapes=({0: batch, 2: 2 * half, 3: 2 * half},))
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    assert torch.ops.dfmvr.Involution.default in targets
    x = torch.randn(3, 32, 24, 24)
    np.testing.assert_allclose(ep.module()(x).detach().numpy(), m(x).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_involution_module_layout_and_kernel_generator():
    m = Involution(64, 7, 2)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items() if "num_batches" not in k}
    assert shapes["conv1.conv.weight"] == (16, 64, 1, 1)
    assert shapes["conv2.conv.weight"] == (4 * 49, 16, 1, 1)
    assert shapes["conv2.conv.bias"] == (4 * 49,)
    assert "conv1.conv.bias" not in shapes
    # Its output equals the op applied to the generator's kernels (read from AvgPool(2) of x).
    m.eval()
    x = torch.randn(1, 64, 8, 8)
    with torch.no_grad():
        kernels = m.conv2.conv(torch.relu(m.conv1.bn(m.conv1.conv(torch.nn.functional.avg_pool2d(x, 2)))))
        want = involution_reference(x.numpy(), kernels.numpy(), 7, 2, 4)
        np.testing.assert_allclose(m(x).numpy(), want, rtol=1e-4, atol=1e-5)
