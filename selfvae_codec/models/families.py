"""The model families: one class each, registered by name, supplying what differs
between them (how many latent levels, the representations' strides and channels, how
they are computed from x, and the config checks). Adding a family is one class here.
No torch at import: the transforms are imported when representations are computed.
"""

from __future__ import annotations

FAMILIES: dict[str, Family] = {}


def register_family(cls):
    FAMILIES[cls.name] = cls()
    return cls


class Family:
    name = ""
    min_u_stride = 1  # u must not be finer than the grid the first z prior reads it on
    downscales = False  # each level doubles the size: the model can upscale by 2^k

    def num_levels(self, levels: int) -> int:
        """Number of z levels (and of likelihoods below the top one), given the
        config's `levels`."""
        raise NotImplementedError

    def y_strides(self, config) -> list[int]:
        """Stride of y_1 ... y_L, x relative to x."""
        raise NotImplementedError

    def y_channels(self, config) -> list[int]:
        raise NotImplementedError

    def representations(self, x, config) -> list:
        """[y_1, ..., y_L, x] as int64 tensors."""
        raise NotImplementedError

    def check(self, config) -> None:
        if config.u_stride < self.min_u_stride:
            raise ValueError(f"{self.name} needs u_stride >= {self.min_u_stride}")


@register_family
class Downscale(Family):
    """selfVAE-downscale: y_k is x downscaled 2^(K+1-k) times (2x2 rounded means)."""

    name = "selfvae-downscale"
    min_u_stride = 2
    downscales = True

    def num_levels(self, levels: int) -> int:
        return levels

    def y_strides(self, config) -> list[int]:
        return [2 ** (config.levels - k) for k in range(config.levels + 1)]

    def y_channels(self, config) -> list[int]:
        return [config.image_channels] * (config.levels + 1)

    def representations(self, x, config) -> list:
        from .transforms import downscale_pyramid

        return downscale_pyramid(x, config.levels)

    def check(self, config) -> None:
        super().check(config)
        if not 1 <= config.levels <= 4:
            raise ValueError(f"{self.name} supports 1 to 4 levels")


@register_family
class Sketch(Family):
    """selfVAE-sketch: y_1 is a pencil sketch of x (gray, same size)."""

    name = "selfvae-sketch"
    min_u_stride = 4

    def num_levels(self, levels: int) -> int:
        return 1

    def y_strides(self, config) -> list[int]:
        return [1, 1]

    def y_channels(self, config) -> list[int]:
        return [1, config.image_channels]

    def representations(self, x, config) -> list:
        from .transforms import sketch

        return [sketch(x, config.sketch_blur_passes), x]


@register_family
class PlainVAE(Family):
    """A plain VAE: one latent u inferred from x, no representations."""

    name = "vae"

    def num_levels(self, levels: int) -> int:
        return 0

    def y_strides(self, config) -> list[int]:
        return [1]

    def y_channels(self, config) -> list[int]:
        return [config.image_channels]

    def representations(self, x, config) -> list:
        return [x]
