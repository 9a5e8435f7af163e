"""The involution kernel's __host__ __device__ arithmetic (g++ build) against the numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from dfmvr.kernels import host
from dfmvr.kernels.op import GROUP_CHANNELS, involution_output_size, involution_reference


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())


def random_case(rng, batch, channels, height, width, k, s, dtype=np.float32):
    groups = channels // GROUP_CHANNELS
    ho, wo = involution_output_size(height, k, s), involution_output_size(width, k, s)
    x = rng.normal(size=(batch, channels, height, width)).astype(dtype)
    w = rng.normal(size=(batch, groups * k * k, ho, wo)).astype(dtype)
    return x, w, groups


@pytest.mark.parametrize("k", [3, 7])
@pytest.mark.parametrize("s", [1, 2])
@pytest.mark.parametrize("hw", [(9, 12), (14, 14)])
def test_fp32_matches_reference(k, s, hw):
    rng = np.random.default_rng(100 * k + 10 * s + hw[0])
    x, w, g = random_case(rng, 2, 32, *hw, k, s)
    y = host.involution_host(x, w, k, s, g)
    ref = involution_reference(x.astype(np.float64), w.astype(np.float64), k, s, g)
    assert y.shape == ref.shape and y.dtype == np.float32
    assert rel_err(y, ref) <= 1e-5


def test_weights_in_five_dim_layout_are_the_same_memory():
    rng = np.random.default_rng(3)
    x, w, g = random_case(rng, 1, 48, 8, 8, 3, 1)
    y4 = host.involution_host(x, w, 3, 1, g)
    y5 = host.involution_host(x, w.reshape(1, g, 9, 8, 8), 3, 1, g)
    np.testing.assert_array_equal(y4, y5)


def test_padding_borders_read_zero():
    # A constant input with all-ones weights: each output counts the in-image taps of its window,
    # so the border pixels see fewer taps than the interior ones.
    x = np.ones((1, 16, 6, 7), np.float32)
    w = np.ones((1, 9, 6, 7), np.float32)
    y = host.involution_host(x, w, 3, 1, 1)
    assert y[0, 0, 0, 0] == 4 and y[0, 0, 0, 3] == 6 and y[0, 0, 3, 3] == 9
    np.testing.assert_array_equal(y, involution_reference(x, w, 3, 1, 1))


@pytest.mark.parametrize("k,s", [(3, 1), (7, 2)])
def test_fp16_matches_reference_on_fp16_inputs(k, s):
    """fp16 storage, fp32 accumulation: equal to the float64 reference on the same fp16 inputs up to
    the final rounding to fp16 (half an fp16 ulp of the output, plus fp32 accumulation noise)."""
    rng = np.random.default_rng(7 * k + s)
    x, w, g = random_case(rng, 2, 32, 11, 13, k, s, np.float16)
    y = host.involution_host(x, w, k, s, g)
    assert y.dtype == np.float16
    ref = involution_reference(x.astype(np.float64), w.astype(np.float64), k, s, g)
    ulp = np.spacing(np.abs(ref).astype(np.float16)).astype(np.float64)
    assert np.all(np.abs(y.astype(np.float64) - ref) <= 0.5 * ulp + 1e-6 * np.abs(ref).max())


def test_rejects_kernel_size_without_kernel():
    rng = np.random.default_rng(0)
    x, w, g = random_case(rng, 1, 16, 8, 8, 5, 1)
    with pytest.raises(ValueError, match="not instantiated"):
        host.involution_host(x, w, 5, 1, g)


def test_rejects_mismatched_dtypes_and_shapes():
    x = np.zeros((1, 16, 8, 8), np.float32)
    with pytest.raises(TypeError):
        host.involution_host(x, np.zeros((1, 9, 8, 8), np.float16), 3, 1, 1)
    with pytest.raises(ValueError):
        host.involution_host(x, np.zeros((1, 9, 4, 4), np.float32), 3, 1, 1)


def test_half_to_float_is_exact_for_every_bit_pattern():
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    got = host.half_to_float_host(bits)
    want = bits.view(np.float16).astype(np.float32)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))  # signed zeros too


def test_float_to_half_rounds_like_numpy():
    rng = np.random.default_rng(11)
    values = np.concatenate([
        rng.normal(0, 1, 20000), rng.normal(0, 1e-5, 20000),            # normals and subnormals
        np.exp(rng.uniform(-20, 12, 20000)) * rng.choice([-1, 1], 20000),
        [0.0, -0.0, 65504.0, 65519.0, 65520.0, 1e9, -1e9, np.inf, -np.inf, 2.0 ** -25, 3 * 2.0 ** -26],
    ]).astype(np.float32)
    # exact ties between neighbouring halves, which must round to even
    halves = rng.normal(0, 10, 5000).astype(np.float16).astype(np.float32)
    ties = halves + np.spacing(halves.astype(np.float16)).astype(np.float32) / 2
    values = np.concatenate([values, ties])
    got = host.float_to_half_host(values)
    with np.errstate(over="ignore"):  # numpy warns when finite values overflow to inf, as intended
        want = values.astype(np.float16).view(np.uint16)
    assert np.array_equal(got, want)
    assert np.isnan(host.half_to_float_host(host.float_to_half_host(np.array([np.nan], np.float32))))[0]
