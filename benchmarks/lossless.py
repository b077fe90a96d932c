"""The lossless half of `benchmark.py`: selfvae-codec `full` mode against PNG, WebP
lossless and JPEG XL lossless, every result verified to round-trip exactly.

Reports bits per subpixel from real byte counts, the model's own estimate of the
coded symbols (-log2 p; the gap to the file size is the codec's overhead), and
encode / decode seconds per image (model loading reported separately).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from common import (
    machine_description,
    selfvae_round_trip,
    write_csv,
    write_json,
)


def measure(codec, image: np.ndarray, name: str, classical: dict, effort: int) -> dict:
    """One image: selfvae-codec `full` at `effort` and the classical lossless codecs,
    each checked to round-trip exactly (a codec that does not is a failed benchmark,
    not a number)."""
    subpixels = image.size
    result, decoded, decode_seconds = selfvae_round_trip(codec, image, name, mode="full", effort=effort)
    if not np.array_equal(decoded, image):
        raise SystemExit(f"selfvae-codec did not round-trip {name} exactly")
    row = {
        "image": name,
        "width": image.shape[1],
        "height": image.shape[0],
        "selfvae_bpsp": len(result.data) * 8 / subpixels,
        "selfvae_estimate_bpsp": sum(result.estimated_bits.values()) / subpixels,
        "selfvae_encode_s": result.seconds,
        "selfvae_decode_s": decode_seconds,
        "selfvae_classical_tiles": classical_tile_share(result.data),
        # the model alone, every tile coded by it (what model changes are judged on)
        "model_only_bpsp": len(codec.compress(image, "full", classical_tiles=False, effort=effort)) * 8 / subpixels,
    }
    for codec_name, run in classical.items():
        data, out, _, _ = run(image)
        if not np.array_equal(out, image):
            raise SystemExit(f"{codec_name} did not round-trip {name} exactly")
        row[f"{codec_name}_bpsp"] = len(data) * 8 / subpixels
    return row


def classical_tile_share(data: bytes) -> float:
    """The share of an .svc file's tiles stored as PNG / lossless WebP (`pixels`)."""
    from selfvae_codec.bitstream import unpack

    header = unpack(data)
    return sum(s.kind == "pixels" for s in header.sections) / header.tile_count


def summarize(rows: list[dict], codec, classical: dict, folder: str, threads: int, effort: int, out: Path) -> None:
    """Write per_image.csv, summary.json and the bar chart under `out`; print a table."""
    write_csv(out / "per_image.csv", rows)
    names = ["selfvae"] + list(classical)
    summary = {
        "folder": folder,
        "images": len(rows),
        "machine": machine_description(threads),
        "model_load_s": codec.load_seconds,
        "model_fingerprint": codec.fingerprint,
        "effort": effort,
        "bits_per_subpixel": {name: float(np.mean([r[f"{name}_bpsp"] for r in rows])) for name in names},
        "selfvae_estimate_bpsp": float(np.mean([r["selfvae_estimate_bpsp"] for r in rows])),
        "selfvae_encode_s": float(np.mean([r["selfvae_encode_s"] for r in rows])),
        "selfvae_decode_s": float(np.mean([r["selfvae_decode_s"] for r in rows])),
        "selfvae_classical_tiles": float(np.mean([r["selfvae_classical_tiles"] for r in rows])),
        "model_only_bpsp": float(np.mean([r["model_only_bpsp"] for r in rows])),
    }
    summary["overhead_percent"] = 100 * (summary["bits_per_subpixel"]["selfvae"] / summary["selfvae_estimate_bpsp"] - 1)
    write_json(out / "summary.json", summary)
    bar_chart(summary["bits_per_subpixel"], out / "lossless.png", len(rows))
    print("\n| codec | bits/subpixel |\n| --- | --- |")
    for name, value in summary["bits_per_subpixel"].items():
        print(f"| {'selfvae-codec full' if name == 'selfvae' else name} | {value:.3f} |")
    print(
        f"\nthe model alone (no classical tiles) {summary['model_only_bpsp']:.3f} bpsp; "
        f"{100 * summary['selfvae_classical_tiles']:.0f}% of tiles stored as PNG / WebP"
    )
    print(
        f"model estimate {summary['selfvae_estimate_bpsp']:.3f} bpsp, overhead {summary['overhead_percent']:.2f}%;"
        f" encode {summary['selfvae_encode_s']:.2f} s, decode {summary['selfvae_decode_s']:.2f} s per image"
        f" ({threads} threads, effort {effort}); model load {codec.load_seconds:.2f} s"
    )


def bar_chart(bits: dict[str, float], path: Path, images: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["selfvae-codec full" if name == "selfvae" else name for name in bits]
    fig, axis = plt.subplots(figsize=(6, 3.2))
    bars = axis.barh(names, list(bits.values()), color=["C3"] + ["C0"] * (len(bits) - 1))
    axis.bar_label(bars, fmt="%.3f", padding=3)
    axis.set_xlabel(f"bits per subpixel (mean of {images} images; lower is better)")
    axis.invert_yaxis()
    axis.set_xlim(0, max(bits.values()) * 1.15)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
