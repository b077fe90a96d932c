"""Training data: the random crops a run trains on."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

DATA = Path(__file__).parent / "data"


def _is_window_of(patch, image):
    """Whether `patch` is a crop of `image` (or of its mirror) as it is, not resampled."""
    size = patch.shape[0]
    for source in (image, image[:, ::-1]):
        for top in range(source.shape[0] - size + 1):
            for left in range(source.shape[1] - size + 1):
                if np.array_equal(source[top : top + size, left : left + size], patch):
                    return True
    return False


def test_native_fraction_keeps_crops_unresampled():
    from selfvae_codec.training.data import RandomCropSampler, load_rgb

    path = DATA / "chelsea_75x50.png"
    image = load_rgb(path)
    native = RandomCropSampler([path], crop=24, seed=3, min_scale=0.6, native_fraction=1.0, flat_std=0.0)
    assert all(_is_window_of(native._one_crop(), image) for _ in range(8))
    # Without it, nearly every crop is a downscaled (box-resampled) window.
    mixed = RandomCropSampler([path], crop=24, seed=3, min_scale=0.6, native_fraction=0.0, flat_std=0.0)
    assert sum(_is_window_of(mixed._one_crop(), image) for _ in range(8)) < 8
    with pytest.raises(ValueError, match="native_fraction"):
        RandomCropSampler([path], crop=24, seed=3, native_fraction=1.5)


def _sampler_sources(tmp_path):
    """A JPEG of fine stripes and a flat red PNG, both 160x160."""
    stripes = np.zeros((160, 160, 3), np.uint8)
    stripes[:, ::2] = 255
    Image.fromarray(stripes).save(tmp_path / "stripes.jpg", quality=95)
    Image.fromarray(np.full((160, 160, 3), (200, 0, 0), np.uint8)).save(tmp_path / "red.png")
    return [tmp_path / "stripes.jpg", tmp_path / "red.png"]


def test_jpeg_sources_are_always_downscaled_when_asked(tmp_path):
    from selfvae_codec.training.data import RandomCropSampler

    files = _sampler_sources(tmp_path)[:1]
    native = RandomCropSampler(files, 32, seed=0, min_scale=1.0, flat_keep=1.0).batch(16)
    halved = RandomCropSampler(files, 32, seed=0, min_scale=1.0, flat_keep=1.0, jpeg_max_scale=0.5).batch(16)
    # columns alternate at native resolution; an area downscale by 2 or more averages them out
    assert native.astype(float).std(axis=(1, 2, 3)).min() > 60
    assert halved.astype(float).std(axis=(1, 2, 3)).max() < 0.5 * native.astype(float).std(axis=(1, 2, 3)).min()


def test_clean_photos_can_be_weighted_up(tmp_path):
    from selfvae_codec.training.data import RandomCropSampler

    files = _sampler_sources(tmp_path)
    even = RandomCropSampler(files, 32, seed=0, flat_keep=1.0).batch(200)
    weighted = RandomCropSampler(files, 32, seed=0, flat_keep=1.0, clean_weight=9.0).batch(200)

    def red_share(batch):
        return float(np.mean([(crop[0] == 200).all() and (crop[1] == 0).all() for crop in batch]))

    assert 0.35 < red_share(even) < 0.65 and red_share(weighted) > 0.8
