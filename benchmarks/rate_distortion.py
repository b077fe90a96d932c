"""The rate-distortion half of `benchmark.py`: selfvae-codec's lossy modes across the
latent step against JPEG, WebP, AVIF and JPEG XL quality sweeps (Pillow + plugins
from `pip install -e .[bench]`).

bpp always comes from real encoded byte counts. PSNR is on 8-bit RGB, MS-SSIM from
pytorch-msssim (images whose short side is under 161 pixels get no MS-SSIM). Times are
per image, with model loading excluded and reported separately. Writes one JSON per
codec in CompressAI's result schema (averaged per setting over the images), a CSV per
image, rate-distortion plots, and summary.json: BD-rate of each selfvae-codec mode
against JPEG and WebP, and those anchors' PSNR at each of our points' bpp.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from common import (
    machine_description,
    pillow_round_trip,
    selfvae_round_trip,
    write_csv,
    write_json,
)

from selfvae_codec.metrics import psnr
from selfvae_codec.models.pretrained import SHIPPED_LOSSY_MODES

MODES = ("rs1", "rs2", "conditional")
MIN_PSNR_SPREAD = 0.5  # dB
# Steps above 1 make rs1 / rs2 unusable (under 16 dB, measured); below 0.25 they only add bits.
DEFAULT_STEPS = "0.25,0.5,1"


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    if min(a.shape[:2]) < 161:
        return float("nan")
    from pytorch_msssim import ms_ssim as msssim

    ta = torch.tensor(a, dtype=torch.float32).permute(2, 0, 1)[None]
    tb = torch.tensor(b, dtype=torch.float32).permute(2, 0, 1)[None]
    return float(msssim(ta, tb, data_range=255.0))


def ms_ssim_db(value: float) -> float:
    """MS-SSIM on a dB scale, -10 log10(1 - MS-SSIM), as rate-distortion plots show it."""
    return float("nan") if math.isnan(value) else -10 * math.log10(max(1e-12, 1 - value))


def classical_sweeps() -> dict[str, list[tuple[str, dict]]]:
    """codec name -> [(setting label, Pillow save options)]."""
    sweeps = {
        "JPEG": ("JPEG", [dict(quality=q) for q in (1, 3, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)]),
        "WebP": ("WEBP", [dict(quality=q, method=4) for q in (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)]),
    }
    try:
        import pillow_avif  # noqa: F401

        sweeps["AVIF"] = ("AVIF", [dict(quality=q, speed=6) for q in (10, 20, 30, 40, 50, 60, 70, 80, 90)])
    except ImportError:
        pass
    try:
        import pillow_jxl  # noqa: F401

        sweeps["JPEG XL"] = ("JXL", [dict(quality=q, effort=7) for q in (10, 20, 30, 40, 50, 60, 70, 80, 90, 95)])
    except ImportError:
        pass
    return {
        name: [(f"q{opts['quality']}", dict(format=fmt, **opts)) for opts in settings]
        for name, (fmt, settings) in sweeps.items()
    }


def bd_rate(anchor: list[tuple[float, float]], test: list[tuple[float, float]]) -> float | None:
    """Bjontegaard delta rate (%) of `test` against `anchor`, each [(bpp, quality in dB:
    PSNR or MS-SSIM's)]: cubic fits of log-rate over quality, integrated over the
    overlapping quality range; None for curves with a missing (NaN) quality."""
    if len(anchor) < 4 or len(test) < 4 or not np.isfinite(anchor + test).all():
        return None
    anchor, test = sorted(anchor), sorted(test)
    ra = np.log([bpp for bpp, _ in anchor])
    pa = np.array([quality for _, quality in anchor])
    rt = np.log([bpp for bpp, _ in test])
    pt = np.array([quality for _, quality in test])
    # A cubic fit needs a real spread of quality on both curves (a curve whose PSNR
    # barely moves, like `conditional` across latent steps, has no meaningful BD-rate).
    if np.ptp(pa) < MIN_PSNR_SPREAD or np.ptp(pt) < MIN_PSNR_SPREAD:
        return None
    low, high = max(pa.min(), pt.min()), min(pa.max(), pt.max())
    if high - low < MIN_PSNR_SPREAD:
        return None
    fit_a, fit_t = np.polyint(np.polyfit(pa, ra, 3)), np.polyint(np.polyfit(pt, rt, 3))
    mean_a = (np.polyval(fit_a, high) - np.polyval(fit_a, low)) / (high - low)
    mean_t = (np.polyval(fit_t, high) - np.polyval(fit_t, low)) / (high - low)
    return float((np.exp(mean_t - mean_a) - 1) * 100)


def selfvae_settings(
    mode: str, codec, steps: list[float], lossy_codec, lossy_modes: tuple[str, ...] = SHIPPED_LOSSY_MODES
) -> tuple:
    """(the codec, [(label, encode options)]) of a mode's points: the lossy model at its
    quality settings for `lossy_modes`, the lossless model at latent steps otherwise."""
    if lossy_codec is not None and mode in lossy_modes:
        return lossy_codec, [(f"q{q}", dict(quality=q)) for q in range(1, lossy_codec.model.config.qualities + 1)]
    return codec, [(f"step{step:g}", dict(step=step)) for step in steps]


def measure(
    codec,
    image: np.ndarray,
    name: str,
    modes: list[str],
    steps: list[float],
    sweeps: dict,
    lossy_codec=None,
    lossy_modes: tuple[str, ...] = SHIPPED_LOSSY_MODES,
) -> list[dict]:
    """One image: every selfvae-codec lossy mode at every setting (`lossy_codec`'s
    qualities for `lossy_modes` when given), and every classical setting. bpp from the real
    byte counts; decoding must give exactly the reconstruction the encoder predicted."""
    pixels = image.shape[0] * image.shape[1]

    def row(codec_name, setting, data, decoded, encode_seconds, decode_seconds) -> dict:
        return dict(
            image=name,
            codec=codec_name,
            setting=setting,
            bpp=len(data) * 8 / pixels,
            psnr_rgb=psnr(image, decoded),
            ms_ssim_rgb=ms_ssim(image, decoded),
            encoding_time=encode_seconds,
            decoding_time=decode_seconds,
        )

    rows = []
    for mode in modes:
        coder, settings = selfvae_settings(mode, codec, steps, lossy_codec, lossy_modes)
        for setting, options in settings:
            label = f"{mode} {setting}: {name}"
            result, decoded, decode_seconds = selfvae_round_trip(coder, image, label, mode=mode, **options)
            rows.append(row(f"selfvae-{mode}", setting, result.data, decoded, result.seconds, decode_seconds))
    for codec_name, settings in sweeps.items():
        for label, options in settings:
            options = dict(options)
            data, decoded, enc_s, dec_s = pillow_round_trip(image, options.pop("format"), **options)
            rows.append(row(codec_name, label, data, decoded, enc_s, dec_s))
    return rows


def reused_rows(path: Path, modes: list[str], images: list[str]) -> tuple[dict[str, list[dict]], list[str]]:
    """The rows of an earlier per_image.csv that a run measuring only `modes` does not
    measure again: every classical codec, and every selfvae mode not in `modes`, for
    each of `images` (image name -> rows; numbers come back as numbers), and the
    selfvae modes they hold. An image the file lacks stops the benchmark."""
    import csv

    with open(path, newline="") as handle:
        rows = [
            {key: value if key in ("image", "codec", "setting") else float(value) for key, value in row.items()}
            for row in csv.DictReader(handle)
            if row["codec"] not in {f"selfvae-{mode}" for mode in modes}
        ]
    by_image = {name: [r for r in rows if r["image"] == name] for name in images}
    missing = [name for name, found in by_image.items() if not found]
    if missing:
        raise SystemExit(f"--reuse {path}: no rows for {', '.join(missing[:3])}")
    reused_modes = [mode for mode in MODES if any(r["codec"] == f"selfvae-{mode}" for r in rows)]
    return by_image, reused_modes


def reuse_record(path: Path, modes: list[str]) -> dict:
    """What a summary says of rows reused from the earlier per_image.csv at `path`:
    where from, the modes measured anew, and per lossy mode not measured anew the
    fingerprint of the lossy model its reused rows were measured with (from that
    run's summary.json beside it, itself perhaps a run that reused rows)."""
    record = {"from": str(path), "measured_modes": modes}
    earlier = path.parent / "summary.json"
    if earlier.is_file():
        summary = json.loads(earlier.read_text())
        reused = summary.get("reused_rows") or {}
        models = reused.get("reused_models", {})
        record["reused_models"] = {
            mode: (
                summary.get("lossy_model_fingerprint")
                if mode in reused.get("measured_modes", MODES)
                else models.get(mode)
            )
            for mode in summary.get("lossy_modes", [])
            if mode not in modes
        }
    return record


def anchor_psnr_at(points: list[dict], bpp: float) -> float | None:
    """PSNR of an anchor's mean curve at `bpp` (linear in log-rate between its two
    nearest settings); None outside the rates the anchor reaches."""
    rates = np.log([p["bpp"] for p in points])
    if not rates[0] <= math.log(bpp) <= rates[-1]:
        return None
    return float(np.interp(math.log(bpp), rates, [p["psnr_rgb"] for p in points]))


def summarize(
    rows: list[dict],
    codec,
    modes: list[str],
    folder: str,
    threads: int,
    out: Path,
    lossy_codec=None,
    reused: dict | None = None,
    lossy_modes: tuple[str, ...] = SHIPPED_LOSSY_MODES,
) -> None:
    """Average each setting over the images (CompressAI style), write one JSON per
    codec, per_image.csv, summary.json (BD-rates, anchors at matched bpp) and the plot.
    `reused` ({"from": the earlier per_image.csv, "measured_modes": [...]}) says which
    rows were taken from an earlier run instead of measured (benchmark.py --reuse)."""
    images = len({r["image"] for r in rows})
    write_csv(out / "per_image.csv", rows)
    curves: dict[str, list[dict]] = {}
    for name in dict.fromkeys(r["codec"] for r in rows):
        for setting in dict.fromkeys(r["setting"] for r in rows if r["codec"] == name):
            group = [r for r in rows if r["codec"] == name and r["setting"] == setting]
            point = {
                key: float(np.nanmean([r[key] for r in group]))
                for key in ("bpp", "psnr_rgb", "ms_ssim_rgb", "encoding_time", "decoding_time")
            }
            curves.setdefault(name, []).append(dict(setting=setting, **point))
    for name, points in curves.items():
        points.sort(key=lambda p: p["bpp"])
        write_json(
            out / f"{name.replace(' ', '_')}.json",
            {
                "name": name,
                "description": f"{images} images of {folder}; {machine_description(threads)}",
                "results": {
                    "bpp": [p["bpp"] for p in points],
                    "psnr-rgb": [p["psnr_rgb"] for p in points],
                    "ms-ssim-rgb": [p["ms_ssim_rgb"] for p in points],
                    "encoding_time": [p["encoding_time"] for p in points],
                    "decoding_time": [p["decoding_time"] for p in points],
                    "setting": [p["setting"] for p in points],
                },
            },
        )
    anchors = [a for a in ("JPEG", "WebP") if a in curves]
    bd, bd_ms_ssim, matched = {}, {}, []

    def curve(name, metric):
        return [(p["bpp"], metric(p)) for p in curves[name]]

    for mode in modes:
        name = f"selfvae-{mode}"
        for table, metric in ((bd, lambda p: p["psnr_rgb"]), (bd_ms_ssim, lambda p: ms_ssim_db(p["ms_ssim_rgb"]))):
            table[name] = {a: bd_rate(curve(a, metric), curve(name, metric)) for a in anchors}
        for p in curves[name]:
            matched.append(dict(codec=name, **p, anchor_psnr={a: anchor_psnr_at(curves[a], p["bpp"]) for a in anchors}))
    write_json(
        out / "summary.json",
        {
            "folder": folder,
            "images": images,
            "machine": machine_description(threads),
            "model_load_s": codec.load_seconds,
            "model_fingerprint": codec.fingerprint,
            "lossy_model_fingerprint": lossy_codec.fingerprint if lossy_codec is not None else None,
            "lossy_modes": list(lossy_modes) if lossy_codec is not None else [],
            "reused_rows": reused,
            "bd_rate_percent_psnr": bd,
            "bd_rate_percent_ms_ssim": bd_ms_ssim,
            "selfvae_points": matched,
            "anchor_ranges_bpp": {a: [curves[a][0]["bpp"], curves[a][-1]["bpp"]] for a in anchors},
        },
    )
    plot(curves, out)
    print("\n| codec | setting | bpp | PSNR (dB) | MS-SSIM | " + " | ".join(f"{a} at this bpp" for a in anchors) + " |")
    for p in matched:
        at = " | ".join("-" if v is None else f"{v:.2f}" for v in p["anchor_psnr"].values())
        print(
            f"| {p['codec']} | {p['setting']} | {p['bpp']:.3f} | {p['psnr_rgb']:.2f} | {p['ms_ssim_rgb']:.4f} | {at} |"
        )
    print(f"\nBD-rate vs anchors, %: PSNR {bd}, MS-SSIM {bd_ms_ssim}; model load {codec.load_seconds:.2f} s")


def plot(curves: dict[str, list[dict]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, points in curves.items():
        style = "o-" if name.startswith("selfvae") else "s--"
        bpp = [p["bpp"] for p in points]
        axes[0].plot(bpp, [p["psnr_rgb"] for p in points], style, ms=3, label=name)
        axes[1].plot(bpp, [ms_ssim_db(p["ms_ssim_rgb"]) for p in points], style, ms=3, label=name)
    for axis, label in zip(axes, ("PSNR RGB (dB)", "MS-SSIM (dB)"), strict=True):
        axis.set_xlabel("bits per pixel")
        axis.set_ylabel(label)
        axis.set_xlim(
            0, max(2.0, 1.05 * max(p["bpp"] for n, c in curves.items() if n.startswith("selfvae") for p in c))
        )
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "rate_distortion.png", dpi=110)
