"""The training settings, declared once: `selfvae-codec train` makes one command-line
option of every field that has a help text (no torch here, so the CLI starts fast).
Why the defaults are what they are is in docs/training.md."""

from __future__ import annotations

from dataclasses import dataclass, field


def setting(default, help: str, **option):
    """A settings field with its command-line help (and extra click arguments)."""
    return field(default=default, metadata={"help": help, "option": option})


# A lossy model's quality settings, coarsest first: CompressAI's lambdas (its loss
# bpp + lambda * 255^2 * MSE on 0..1 is bpp + lambda * MSE on 0..255).
DEFAULT_LAMBDAS = "0.0018,0.0035,0.0067,0.013,0.025,0.0483"


@dataclass
class TrainSettings:
    train_dirs: list[str]
    out_dir: str
    val_dir: str | None = None
    steps: int = setting(100_000, "Train until this many optimiser steps.")
    minutes: float | None = setting(
        None, "Stop after this many minutes (then save, as Ctrl-C does; a single process only).", type=float
    )
    batch_size: int = setting(8, "Crops per optimiser step.")
    crop: int = setting(128, "Side of the random training crops (the coarsest grid must keep an interior).")
    val_crop: int = setting(256, "Side of the validation crop (one per held-out image).")
    val_images: int = setting(50, "Held-out images validated on.")
    lr: float = setting(2e-3, "AdaMax learning rate after the warm-up.")
    warmup_steps: int = setting(500, "Steps of linear learning-rate warm-up (again after growing).")
    decay_from: int | None = setting(
        None, "From this step the learning rate falls linearly to zero at --steps (default: constant).", type=int
    )
    kl_warmup_steps: int = setting(2000, "Steps over which the KL terms' weight rises from 0 to 1.")
    free_bits: float = setting(0.05, "Free bits per z element (nats): no KL penalty below this.")
    grad_clip: float = setting(200.0, "Clip the gradient norm of the per-dimension loss (catches spikes).")
    ema_decay: float = setting(0.999, "Moving average of the weights, validated and shipped (0: off).")
    min_scale: float = setting(0.6, "Crops are downscaled by a random factor in [min-scale, 1].")
    native_fraction: float = setting(0.0, "Share of crops taken at native resolution instead.")
    jpeg_max_scale: float = setting(
        1.0,
        "Crops of JPEG sources are downscaled by a factor in [max/2, max]: 0.5 hides their blocks and 4:2:0 chroma.",
    )
    clean_weight: float = setting(1.0, "How much more often a pixel of a non-JPEG photo is picked than a JPEG one.")
    extra_val_dir: str | None = setting(
        None, "A second held-out folder, validated beside --val (logged as kind val_FOLDER).", type=str
    )
    init_from: str | None = setting(
        None,
        "Start a new run from a model's weights (shipped name or .safetensors); with --config "
        "'{\"qualities\": N}' a lossless model becomes a lossy one to train for rate and distortion.",
        type=str,
    )
    lambdas: str = setting(
        DEFAULT_LAMBDAS, "A lossy model's rate-distortion trade-offs, one per quality: loss = bpp + lambda * MSE."
    )
    coarse_weight: float = setting(
        0.5, "A lossy model's distortion adds this weight times the coarser levels' mean MSE (y_1 .. y_L)."
    )
    conditional_weight: float = setting(
        0.0,
        "A lossy model's loss adds this weight times the bits per pixel of its conditional files "
        "(u, the z's and y_1 .. y_L coded losslessly given the true coarser levels).",
    )
    mixed_quantisation: bool = setting(
        False,
        "A lossy model's decoder trains on rounded latents, as the coder sends them "
        "(straight-through gradients); the rate stays on noisy ones.",
    )
    val_every: int = setting(1000, "Validate every this many steps.")
    checkpoint_every: int = setting(250, "Write the checkpoint every this many steps.")
    log_every: int = setting(25, "Log training losses every this many steps.")
    seed: int = setting(0, "Seed of every random choice (runs are reproducible).")
    threads: int = setting(1, "torch threads (1 while you work beside it).")
    device: str = setting("cpu", "cpu, cuda or cuda:N.")
    compile: bool = setting(False, "torch.compile the training step: faster after minutes of compiling.")
    progress: bool = True
    config: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.decay_from is not None and self.decay_from >= self.steps:
            raise ValueError(f"--decay-from ({self.decay_from}) must be below --steps ({self.steps})")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.native_fraction <= 1.0:
            raise ValueError(f"--native-fraction must be in [0, 1], got {self.native_fraction}")
        if not 0.0 < self.jpeg_max_scale <= 1.0:
            raise ValueError(f"--jpeg-max-scale must be in (0, 1], got {self.jpeg_max_scale}")
        for name in ("coarse_weight", "conditional_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.minutes is not None and self.minutes <= 0:
            raise ValueError(f"--minutes must be positive, got {self.minutes}")
        if self.clean_weight <= 0:
            raise ValueError(f"--clean-weight must be positive, got {self.clean_weight}")
