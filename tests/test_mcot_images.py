"""Images: every cell form read as RGB, PNG data URIs round trip, size limits."""

import io

import numpy as np
import pytest
from PIL import Image

from hf_faithful.mcot.images import fit_image, load_image, png_data_uri


def test_load_image_forms(tmp_path):
    gray = Image.new("L", (6, 4), 77)
    gray.save(tmp_path / "g.png")
    buffer = io.BytesIO()
    gray.save(buffer, format="PNG")
    for value, base in (
        (gray, None),
        ("g.png", tmp_path),
        (str(tmp_path / "g.png"), None),
        (buffer.getvalue(), None),
        ({"bytes": buffer.getvalue(), "path": None}, None),
        ({"bytes": None, "path": "g.png"}, tmp_path),
        (png_data_uri(gray), None),
    ):
        image = load_image(value, base)
        assert image.mode == "RGB" and image.size == (6, 4)
        assert np.asarray(image)[0, 0].tolist() == [77, 77, 77]
    with pytest.raises(FileNotFoundError, match="image file not found"):
        load_image("missing.png", tmp_path)
    with pytest.raises(ValueError, match="'bytes' or 'path'"):
        load_image({"bytes": None})
    with pytest.raises(ValueError, match="cannot read an image from int"):
        load_image(3)


def test_data_uri_round_trip_and_fit():
    pixels = np.random.default_rng(0).integers(0, 256, size=(30, 50, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    uri = png_data_uri(image)
    assert uri.startswith("data:image/png;base64,")
    np.testing.assert_array_equal(np.asarray(load_image(uri)), pixels)
    assert fit_image(image, 25).size == (25, 15)
    assert fit_image(image, 100) is image  # never upscaled, RGB kept as is
    with pytest.raises(ValueError, match="max_side"):
        fit_image(image, 0)


def test_max_image_pixels_refuses_large_images_as_value_error(tmp_path, monkeypatch):
    Image.new("RGB", (100, 50)).save(tmp_path / "big.png")  # 5,000 pixels
    with pytest.raises(
        ValueError, match=r"100x50 = 5,000 pixels, more than max_image_pixels=4,999"
    ):
        load_image("big.png", tmp_path, max_image_pixels=4_999)
    assert load_image("big.png", tmp_path, max_image_pixels=5_000).size == (100, 50)
    with pytest.raises(ValueError, match="max_image_pixels must be >= 1"):
        load_image("big.png", tmp_path, max_image_pixels=0)
    # PIL's own guard raises DecompressionBombError (not a ValueError, so readers that keep
    # bad records aborted the whole file); it becomes a ValueError naming the limit
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    with pytest.raises(ValueError, match="more than max_image_pixels=1,000 pixels"):
        load_image(str(tmp_path / "big.png"), max_image_pixels=1_000)
    # a larger limit of the caller rules over PIL's global one, which is left as it was
    assert load_image("big.png", tmp_path, max_image_pixels=None).size == (100, 50)
    assert load_image("big.png", tmp_path).size == (100, 50)  # default: PIL's default limit
    assert Image.MAX_IMAGE_PIXELS == 1_000
