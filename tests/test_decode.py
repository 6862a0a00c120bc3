"""Decoding and resizing with torchvision.io (extract.decode: torchvision), on the CPU, against the PIL path: the same
geometry (sizes, crop offsets, black padding), values within a few levels of 255, every JPEG mode read, bad files
named or skipped."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from peekflow.data.decode import decode_batch, preprocess_batch, resize_crop
from peekflow.data.folder import Preprocessing
from workflow import random_image

CPU = torch.device("cpu")


def encoded(img: Image.Image, fmt: str = "JPEG") -> torch.Tensor:
    buf = io.BytesIO()
    img.save(buf, format=fmt, quality=90)
    return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)


@pytest.mark.parametrize("size,resize,crop", [((300, 200), 256, 224), ((180, 500), 256, 224), ((64, 64), 32, None),
                                              ((100, 40), 50, 120), ((224, 224), None, 200)])
def test_geometry_is_the_pil_paths(size, resize, crop):
    """A white frame one pixel wide inside a black image: after resize and crop, the same rows and columns are lit in
    both paths (nearest neighbour, so no kernel blurs the answer), and the crop beyond the image is black in both."""
    w, h = size
    pixels = np.zeros((h, w, 3), np.uint8)
    pixels[h // 4, :] = pixels[:, w // 3] = 255
    img = Image.fromarray(pixels)
    p = Preprocessing(resize=resize, crop=crop, interpolation="nearest")
    want = p.pixels(img).numpy()
    got = resize_crop(torch.from_numpy(pixels).permute(2, 0, 1), p).numpy()
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_values_within_a_few_levels_of_the_pil_path(interpolation):
    rng = np.random.default_rng(0)
    p = Preprocessing(resize=256, crop=224, interpolation=interpolation)
    for _ in range(6):
        img = random_image(rng).convert("RGB")
        want = p.pixels(img).numpy()
        got = resize_crop(torch.from_numpy(np.array(img)).permute(2, 0, 1), p).numpy()
        diff = np.abs(got - want) * 255
        assert diff.mean() < 1.0 and np.quantile(diff, 0.99) <= 4, (diff.mean(), diff.max())


def test_every_jpeg_mode_and_png_decode_as_pil_reads_them():
    rng = np.random.default_rng(1)
    images = [random_image(rng) for _ in range(12)]
    assert {img.mode for img in images} >= {"RGB", "L", "CMYK"}
    data = [encoded(img) for img in images] + [encoded(images[0].convert("RGB"), "PNG")]
    paths = [f"{i}.jpg" for i in range(len(data))]
    decoded, skipped = decode_batch(data, paths, CPU)
    assert skipped == [] and len(decoded) == len(data)
    for img, raw, got in zip(images + [images[0]], data, decoded):
        with Image.open(io.BytesIO(raw.numpy().tobytes())) as back:
            want = np.asarray(back.convert("RGB")).transpose(2, 0, 1)
        assert got.shape == want.shape and got.dtype == torch.uint8
        tol = 3 if img.mode == "CMYK" else 0  # PIL and libjpeg convert CMYK with their own rounding
        assert np.abs(got.numpy().astype(int) - want).max() <= tol, img.mode
    x = preprocess_batch(decoded, Preprocessing(resize=64, crop=56, mean=[0.5] * 3, std=[0.25] * 3))
    assert x.shape == (len(data), 3, 56, 56) and x.dtype == torch.float32


def test_a_bad_file_is_named_or_skipped():
    good = encoded(Image.new("RGB", (20, 20), (10, 200, 30)))
    bad = torch.tensor([0xFF, 0xD8, 1, 2, 3], dtype=torch.uint8)
    with pytest.raises(ValueError, match="cannot read image b.jpg"):
        decode_batch([good, bad], ["a.jpg", "b.jpg"], CPU)
    decoded, skipped = decode_batch([good, bad, good], ["a.jpg", "b.jpg", "c.jpg"], CPU, skip_corrupt=True)
    assert skipped == [1] and len(decoded) == 2
