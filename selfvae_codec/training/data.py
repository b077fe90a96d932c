"""Training data: random crops cut at load time from folders of photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..codec.images import list_images, load_image
from .crops import read_crop_file


def load_rgb(path: Path) -> np.ndarray:
    """A photo as the codec codes it: uint8 [H, W, 3] (grayscale repeated)."""
    return load_image(path).pixels


class RandomCropSampler:
    """Random crops of whole photos held in memory, with flips, an optional random
    downscale (factor in [min_scale, 1]; a fraction `native_fraction` of the crops is
    kept at native resolution instead) and rejection of most nearly flat crops
    (luminance std below `flat_std`, kept with probability `flat_keep`) so smooth
    wallpapers do not dominate.

    JPEG sources carry 8x8 blocks and 4:2:0 chroma that a 0.6-1 downscale does not
    remove: with `jpeg_max_scale` below 1 their crops are always downscaled by a factor
    in [jpeg_max_scale / 2, jpeg_max_scale] (area filter). Pixels of the other (clean)
    photos are picked `clean_weight` times as often as JPEG ones.

    `files` may instead be a crop file (crops.py), whose regions stand in for the
    photos; its JPEG regions are downscaled already, so `jpeg_max_scale` must be 1.

    All randomness comes from one numpy Generator whose state can be saved.
    """

    def __init__(
        self,
        files: list[Path] | Path,
        crop: int,
        seed: int,
        min_scale: float = 0.6,
        native_fraction: float = 0.0,
        flat_std: float = 3.0,
        flat_keep: float = 0.25,
        jpeg_max_scale: float = 1.0,
        clean_weight: float = 1.0,
    ):
        if isinstance(files, Path):
            if jpeg_max_scale != 1.0:
                raise ValueError("a crop file's JPEG regions are downscaled already: leave --jpeg-max-scale at 1")
            self.images, self.is_jpeg = read_crop_file(files)
        else:
            self.images = [load_rgb(p) for p in files]
            self.is_jpeg = [p.suffix.lower() in (".jpg", ".jpeg") for p in files]
        self.jpeg_max_scale = jpeg_max_scale
        self.crop = crop
        if not 0.0 <= native_fraction <= 1.0:
            raise ValueError(f"native_fraction must be in [0, 1], got {native_fraction}")
        self.min_scale = min_scale
        self.native_fraction = native_fraction
        self.flat_std = flat_std
        self.flat_keep = flat_keep
        self.rng = np.random.default_rng(seed)
        areas = np.array([img.shape[0] * img.shape[1] for img in self.images], dtype=np.float64)
        if clean_weight != 1.0:
            areas = areas * np.where(self.is_jpeg, 1.0, clean_weight)
        self.pick_probs = areas / areas.sum()  # every pixel (of a kind) is equally likely to be seen

    def _one_crop(self) -> np.ndarray:
        index = self.rng.choice(len(self.images), p=self.pick_probs)
        image = self.images[index]
        if self.is_jpeg[index] and self.jpeg_max_scale < 1.0:
            scale = self.rng.uniform(self.jpeg_max_scale / 2, self.jpeg_max_scale)
        else:
            # With native_fraction 0 no extra number is drawn, so older runs resume unchanged.
            native = self.native_fraction > 0 and self.rng.random() < self.native_fraction
            scale = self.rng.uniform(self.min_scale, 1.0) if self.min_scale < 1.0 and not native else 1.0
        source = min(int(round(self.crop / scale)), image.shape[0], image.shape[1])
        source = max(source, self.crop) if min(image.shape[:2]) >= self.crop else min(image.shape[:2])
        top = self.rng.integers(0, image.shape[0] - source + 1)
        left = self.rng.integers(0, image.shape[1] - source + 1)
        patch = image[top : top + source, left : left + source]
        if patch.shape[0] != self.crop or patch.shape[1] != self.crop:
            patch = np.asarray(Image.fromarray(patch).resize((self.crop, self.crop), Image.Resampling.BOX))
        if self.rng.random() < 0.5:
            patch = patch[:, ::-1]
        return np.ascontiguousarray(patch)

    def _is_flat(self, patch: np.ndarray) -> bool:
        luma = patch.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return float(luma.std()) < self.flat_std

    def batch(self, size: int) -> np.ndarray:
        """[size, 3, crop, crop] uint8."""
        patches = []
        while len(patches) < size:
            patch = self._one_crop()
            if self._is_flat(patch) and self.rng.random() >= self.flat_keep:
                continue
            patches.append(patch)
        return np.stack(patches).transpose(0, 3, 1, 2).copy()

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def training_sources(paths: list[str]) -> list[Path] | Path:
    """What `train` cuts its crops from: the photos in folders, or one crop file (.npz)."""
    crop_files = [Path(p) for p in paths if str(p).endswith(".npz")]
    if not crop_files:
        return list_images(paths)
    if len(paths) > 1:
        raise ValueError("train takes one crop file, or folders of photos, not both")
    return crop_files[0]


def validation_crops(files: list[Path], crop: int, per_image: int = 2) -> np.ndarray:
    """Deterministic crops (evenly spaced along the diagonal) of held-out photos."""
    crops = []
    for path in files:
        image = load_rgb(path)
        height, width = image.shape[:2]
        if height < crop or width < crop:
            continue
        for i in range(per_image):
            top = (height - crop) * (i + 1) // (per_image + 1)
            left = (width - crop) * (i + 1) // (per_image + 1)
            crops.append(image[top : top + crop, left : left + crop])
    if not crops:
        raise ValueError(f"no validation image is at least {crop}x{crop}")
    return np.stack(crops).transpose(0, 3, 1, 2).copy()
