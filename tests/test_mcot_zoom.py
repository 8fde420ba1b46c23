"""The zoom-in tool: DeepEyes' box rules, coordinates, and crops of the original image."""

import math

import numpy as np
import pytest
from PIL import Image

from hf_faithful.mcot.zoom import Box, BoxRules, InvalidBoxError, normalize_box, zoom_in


@pytest.fixture
def gradient():
    """400x200 image whose pixel (x, y) is (x % 256, y, (x + y) % 256): crops are checkable."""
    x, y = np.meshgrid(np.arange(400), np.arange(200))
    pixels = np.stack([x % 256, y, (x + y) % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(pixels)


def test_absolute_box_is_validated_and_kept():
    assert normalize_box([10, 20, 110, 70], (400, 200)) == Box(10, 20, 110, 70)


def test_normalized_1000_coordinates_scale_with_the_image():
    rules = BoxRules(coords="normalized_1000")
    # 250/1000 of 400 px = 100; 500/1000 of 200 px = 100
    assert normalize_box([250, 100, 500, 500], (400, 200), rules) == Box(100, 20, 200, 100)


def test_box_is_clamped_to_the_image_like_deepeyes():
    assert normalize_box([-50, -10, 450, 260], (400, 200)) == Box(0, 0, 400, 200)


def test_min_side_follows_deepeyes_strict_inequality():
    # DeepEyes asserts min(height, width) > 30: a 30-px side is refused, 31 accepted.
    with pytest.raises(InvalidBoxError, match="too small"):
        normalize_box([0, 0, 30, 100], (400, 200))
    assert normalize_box([0, 0, 31, 100], (400, 200)).width == 31
    # a box that becomes too small only after clamping is refused too
    with pytest.raises(InvalidBoxError, match="too small"):
        normalize_box([380, 0, 480, 100], (400, 200))
    assert normalize_box([0, 0, 10, 10], (400, 200), BoxRules(min_side=5)).area == 100


@pytest.mark.parametrize(
    ("bbox", "message"),
    [
        ([1, 2, 3], "4 numbers"),
        ([0, 0, float("nan"), 50], "x2 is not finite"),
        ([0, 0, math.inf, 50], "not finite"),
        ([0, "a", 50, 50], "y1 is not a number"),
        ([100, 100, 50, 150], "inverted"),
        ([50, 50, 50, 150], "zero area"),
        ([500, 300, 600, 400], "outside"),
        ("10, 10, 50, 50", "list of 4 numbers"),
        ({"x": 1}, "bbox_2d"),
    ],
)
def test_bad_boxes_raise_a_message_naming_the_problem(bbox, message):
    with pytest.raises(InvalidBoxError, match=message):
        normalize_box(bbox, (400, 200))


def test_extreme_aspect_ratio_is_refused():
    rules = BoxRules(min_side=0, max_aspect_ratio=10)
    assert normalize_box([0, 0, 100, 10], (400, 200), rules).width == 100  # exactly 10
    with pytest.raises(InvalidBoxError, match="aspect ratio 10.1"):
        normalize_box([0, 0, 101, 10], (400, 200), rules)


def test_without_clamping_an_overflowing_box_is_refused():
    with pytest.raises(InvalidBoxError, match="reaches outside"):
        normalize_box([300, 0, 450, 100], (400, 200), BoxRules(clamp=False))


def test_rules_and_box_inputs_are_checked():
    with pytest.raises(ValueError, match="coords"):
        BoxRules(coords="relative")
    assert Box.from_any({"bbox_2d": [1, 2, 3, 4]}).to_list() == [1, 2, 3, 4]
    assert Box.from_any({"x1": 1, "y1": 2, "x2": 3, "y2": 4}).area == 4
    assert Box.from_any(np.array([1.0, 2.0, 5.0, 6.0])) == Box(1, 2, 5, 6)
    with pytest.raises(InvalidBoxError):
        Box.from_any([True, 0, 1, 1])


def test_zoom_in_crops_the_original_pixels(gradient):
    crop = zoom_in(gradient, [10, 20, 110, 70])
    assert crop.size == (100, 50)
    np.testing.assert_array_equal(np.asarray(crop), np.asarray(gradient)[20:70, 10:110])


def test_zoom_in_with_fractional_normalized_box_covers_the_whole_region(gradient):
    # 333/1000 * 400 = 133.2 -> starts at pixel 133; 666/1000 * 400 = 266.4 -> ends at 267
    crop = zoom_in(gradient, [333, 0, 666, 500], BoxRules(coords="normalized_1000"))
    assert crop.size == (267 - 133, 100)
    np.testing.assert_array_equal(np.asarray(crop), np.asarray(gradient)[0:100, 133:267])


def test_box_iou_hand_computed():
    a, b = Box(0, 0, 10, 10), Box(5, 0, 15, 10)
    assert a.iou(b) == pytest.approx(50 / 150)
    assert a.iou(a) == 1.0
    assert a.iou(Box(20, 20, 30, 30)) == 0.0  # disjoint
    assert Box(0, 0, 0, 5).iou(Box(0, 0, 0, 5)) == 0.0  # empty boxes


def test_tiny_boxes_are_enlarged_as_deepeyes_v5(gradient):
    # maybe_resize_bbox of DeepEyes' visual_toolbox_v5.py, by hand for [10, 10, 20, 40]:
    # ratio 28/10 = 2.8, half sides ceil(14) = 14 and ceil(42) = 42 about (15, 25)
    rules = BoxRules(min_side=0, enlarge_below=28)
    assert normalize_box([10, 10, 20, 40], (400, 200), rules) == Box(1, -17, 29, 67)
    with pytest.raises(InvalidBoxError, match="too small"):  # refused without enlarging
        normalize_box([10, 10, 20, 40], (400, 200))
    assert normalize_box([10, 10, 40, 40], (400, 200), rules) == Box(10, 10, 40, 40)  # 30 px
    # the enlarged box reaches above the image: the crop is padded black, as PIL does there
    crop = zoom_in(gradient, [10, 10, 20, 40], rules)
    assert crop.size == (28, 84)
    pixels = np.asarray(crop)
    assert (pixels[:17] == 0).all()  # rows -17..-1
    np.testing.assert_array_equal(pixels[17:], np.asarray(gradient)[0:67, 1:29])
    with pytest.raises(InvalidBoxError, match="aspect ratio"):  # checked before enlarging
        normalize_box([0, 0, 390, 2], (400, 200), BoxRules(min_side=0, enlarge_below=28))


def test_smart_resize_matches_deepeyes_eval():
    from hf_faithful.mcot.zoom import smart_resize

    # eval_vstar.py: multiples of 28, at least 4*28*28 pixels, at most 16384*28*28
    assert smart_resize(240, 320) == (252, 308)  # rounded to the nearest multiple
    assert smart_resize(84, 28) == (112, 56)  # 2352 px < 3136: scaled up, ceil
    h, w = smart_resize(10_000, 10_000)
    assert h * w <= 16384 * 28 * 28 and h % 28 == 0 and w % 28 == 0 and h == w == 3556
    assert smart_resize(10, 10) == (56, 56)


def test_crop_resize_hands_the_model_a_smart_resized_crop(gradient):
    rules = BoxRules(crop_resize="smart_resize")
    crop = zoom_in(gradient, [0, 0, 100, 50], rules)
    assert crop.size == (112, 56)  # 100x50 -> 5000 px: nearest multiples 112 x 56
    assert zoom_in(gradient, [0, 0, 100, 50]).size == (100, 50)
    with pytest.raises(ValueError, match="crop_resize"):
        BoxRules(crop_resize="bilinear")
    with pytest.raises(ValueError, match="enlarge_below"):
        BoxRules(enlarge_below=-1)
