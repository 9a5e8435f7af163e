"""The shared contracts of dfmvr.face.layout: view order, parse classes, the 269-number layout."""

from __future__ import annotations

import numpy as np
import pytest

from dfmvr.face.layout import (
    COEFFS, NUM_PARSE_CLASSES, NUM_VIEWS, PARSE_CLASSES, VIEW_SUFFIXES, VIEW_YAW_DEG, VIEWS,
    CoefficientLayout, Coefficients,
)


def test_view_order_and_official_suffixes():
    assert VIEWS == ("left", "front", "right")
    assert VIEW_SUFFIXES == ("_lt", "_ft", "_rt")
    assert NUM_VIEWS == 3
    assert VIEW_YAW_DEG[1] == 0.0 and VIEW_YAW_DEG[0] == -VIEW_YAW_DEG[2]


def test_parse_classes_are_the_ten_of_the_architecture():
    assert NUM_PARSE_CLASSES == 10
    assert PARSE_CLASSES == ("background", "skin", "left_brow", "right_brow", "left_eye", "right_eye",
                             "nose", "mouth", "upper_lip", "lower_lip")


def test_sizes_match_the_official_heads():
    # id 80 + exp 64 + tex 80 + gamma 27 + 3 views x (rotate 3 + offset_xy 2 + offset_z 1)
    assert COEFFS.size == 80 + 64 + 80 + 27 + 3 * (3 + 2 + 1) == 269
    assert COEFFS.shared == 251 and COEFFS.per_view == 6


def test_block_order_is_the_official_head_order():
    flat = np.arange(2 * 269, dtype=np.float32).reshape(2, 269)
    c = COEFFS.split(flat)
    np.testing.assert_array_equal(c.identity[0], np.arange(0, 80))
    np.testing.assert_array_equal(c.expression[0], np.arange(80, 144))
    np.testing.assert_array_equal(c.texture[0], np.arange(144, 224))
    np.testing.assert_array_equal(c.lighting[0], np.arange(224, 251))
    assert c.rotation.shape == (2, 3, 3) and c.translation.shape == (2, 3, 3)
    for v in range(3):  # each view: rotation (3), translation x, y (2), z (1), views in VIEWS order
        start = 251 + 6 * v
        np.testing.assert_array_equal(c.rotation[0, v], np.arange(start, start + 3))
        np.testing.assert_array_equal(c.translation[0, v], np.arange(start + 3, start + 6))
    np.testing.assert_array_equal(c.identity[1], np.arange(269, 269 + 80))


def test_split_join_round_trip_and_dtype():
    rng = np.random.default_rng(0)
    flat = rng.normal(size=(4, 269)).astype(np.float64)
    back = COEFFS.join(COEFFS.split(flat))
    assert back.dtype == np.float32 and back.shape == (4, 269)
    np.testing.assert_allclose(back, flat.astype(np.float32))
    c = COEFFS.split(back)
    again = COEFFS.split(COEFFS.join(c))
    for key, value in c.as_dict().items():
        np.testing.assert_array_equal(getattr(again, key), value)


def test_wrong_length_is_rejected():
    with pytest.raises(ValueError, match="268"):
        COEFFS.split(np.zeros((1, 268)))


def test_zeros_select_and_to_dict():
    z = COEFFS.zeros(3)
    assert isinstance(z, Coefficients) and z.batch == 3
    assert not COEFFS.join(z).any()
    flat = np.arange(3 * 269, dtype=np.float32).reshape(3, 269)
    one = COEFFS.split(flat).select(1)
    assert one.batch == 1
    np.testing.assert_array_equal(COEFFS.join(one)[0], flat[1])
    assert CoefficientLayout(**COEFFS.to_dict()) == COEFFS


def test_a_two_view_layout_has_fewer_pose_numbers():
    two = CoefficientLayout(views=2)
    assert two.size == 251 + 12
    c = two.split(np.zeros((1, two.size)))
    assert c.rotation.shape == (1, 2, 3)
