"""Near-lossless `full` files (--max-error N) against JPEG-LS near-lossless at the same N
and JPEG XL at the distance that reaches the same PSNR, with our lossless `full` (N = 0)
beside them. Every decoded image is checked against its bound: a codec that exceeds it
stops the benchmark.

    python benchmarks/near_lossless.py ../shared/data/val/classic --threads 2 \
        --out benchmarks/results/classic/near_lossless

Writes per_image.csv, summary.json (means per N) and near_lossless.png under --out.
JPEG-LS and JPEG XL come from imagecodecs (`pip install -e ".[bench]"`); without it
those columns are left out.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from common import add_common_arguments, load_codec_and_images, load_rgb, machine_description, write_csv, write_json

MAX_ERRORS = (0, 1, 2, 4, 8)
JXL_SEARCH_STEPS = 12  # bisection steps over the JPEG XL distance


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def max_error(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max())


def ours(codec, image: np.ndarray, bound: int, name: str, effort: int, model_alone: bool = True) -> dict:
    """selfvae-codec at `bound`: the file, the model alone (unless not `model_alone`),
    the times, the check."""
    result = codec.encode(image, "full", max_error=bound, effort=effort)
    started = time.perf_counter()
    decoded = codec.decompress(result.data)
    decode_seconds = time.perf_counter() - started
    if not np.array_equal(decoded, result.reconstruction) or max_error(decoded, image) > bound:
        raise SystemExit(f"selfvae-codec {name} at max error {bound}: outside its bound or not as encoded")
    model_bits = float("nan")
    if model_alone:
        model_bits = 8 * len(codec.compress(image, "full", classical_tiles=False, max_error=bound, effort=effort))
    return {
        "selfvae_bpsp": 8 * len(result.data) / image.size,
        "selfvae_psnr": psnr(decoded, image),
        "selfvae_max_error": max_error(decoded, image),
        "model_only_bpsp": model_bits / image.size,
        "selfvae_encode_s": result.seconds,
        "selfvae_decode_s": decode_seconds,
    }


def jpeg_ls(image: np.ndarray, bound: int, name: str) -> dict:
    import imagecodecs

    data = imagecodecs.jpegls_encode(image, level=bound)
    decoded = imagecodecs.jpegls_decode(data)
    if max_error(decoded, image) > bound:
        raise SystemExit(f"JPEG-LS {name} at NEAR={bound}: outside its bound")
    return {"jpegls_bpsp": 8 * len(data) / image.size, "jpegls_psnr": psnr(decoded, image)}


def jpeg_xl_at_psnr(image: np.ndarray, target: float) -> dict:
    """The smallest JPEG XL file (effort 7) whose PSNR reaches `target`: a bisection
    over the distance, or lossless where that is smaller or no distance reaches it."""
    import imagecodecs

    def trial(distance: float | None):
        options = {"lossless": True} if distance is None else {"distance": distance}
        data = imagecodecs.jpegxl_encode(image, effort=7, **options)
        decoded = imagecodecs.jpegxl_decode(data)
        return data, decoded

    low, high, best = 0.0, 15.0, trial(None)
    for _ in range(JXL_SEARCH_STEPS if np.isfinite(target) else 0):
        middle = (low + high) / 2
        data, decoded = trial(middle)
        if psnr(decoded, image) >= target:
            low = middle
            best = min(best, (data, decoded), key=lambda pair: len(pair[0]))
        else:
            high = middle
    data, decoded = best
    return {
        "jxl_bpsp": 8 * len(data) / image.size,
        "jxl_psnr": psnr(decoded, image),
        "jxl_max_error": max_error(decoded, image),
    }


def have_imagecodecs() -> bool:
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        print("imagecodecs is not installed: JPEG-LS and JPEG XL are left out", file=sys.stderr)
        return False
    return True


def summarize(rows: list[dict]) -> list[dict]:
    """The mean of every measured column per max error."""
    summary = []
    for bound in sorted({row["max_error"] for row in rows}):
        chosen = [row for row in rows if row["max_error"] == bound]
        columns = [key for key in chosen[0] if key not in ("image", "max_error")]
        mean = {key: float(np.mean([row[key] for row in chosen])) for key in columns}
        summary.append({"max_error": bound, "images": len(chosen), **mean})
    return summary


def plot(summary: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bounds = [row["max_error"] for row in summary]
    fig, axis = plt.subplots(figsize=(6, 3.4))
    series = [
        ("selfvae_bpsp", "selfvae-codec full --max-error N"),
        ("model_only_bpsp", "the model alone"),
        ("jpegls_bpsp", "JPEG-LS NEAR=N"),
        ("jxl_bpsp", "JPEG XL at the same PSNR"),
    ]
    for key, label in series:
        if key in summary[0]:
            axis.plot(bounds, [row[key] for row in summary], marker="o", label=label)
    axis.set_xlabel("maximum error N per subpixel")
    axis.set_ylabel("bits per subpixel")
    axis.set_xticks(bounds)
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--max-errors", type=int, nargs="+", default=list(MAX_ERRORS))
    parser.add_argument("--effort", type=int, default=2, help="selfvae-codec's --effort (3 adapts the heads)")
    parser.add_argument("--no-classical", action="store_true", help="leave out JPEG-LS and JPEG XL")
    parser.add_argument("--files-only", action="store_true", help="leave out the model alone (no classical tiles)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    codec, files = load_codec_and_images(args)
    classical = not args.no_classical and have_imagecodecs()
    rows = []
    for path in files:
        image = load_rgb(path)
        for bound in args.max_errors:
            measured = ours(codec, image, bound, path.name, args.effort, not args.files_only)
            row = {"image": path.name, "max_error": bound, **measured}
            if classical:
                row.update(jpeg_ls(image, bound, path.name))
                row.update(jpeg_xl_at_psnr(image, row["selfvae_psnr"]))
            rows.append(row)
            print(
                f"{path.name} N={bound}: {row['selfvae_bpsp']:.3f} bpsp (model {row['model_only_bpsp']:.3f}), "
                f"{row['selfvae_psnr']:.2f} dB" + (f", JPEG-LS {row['jpegls_bpsp']:.3f}" if classical else ""),
                file=sys.stderr,
            )
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "per_image.csv", rows)
    summary = summarize(rows)
    write_json(
        args.out / "summary.json",
        {
            "folder": args.folder,
            "images": len(files),
            "machine": machine_description(args.threads),
            "model_fingerprint": codec.fingerprint,
            "effort": args.effort,
            "by_max_error": summary,
        },
    )
    plot(summary, args.out / "near_lossless.png", f"{args.folder} ({len(files)} images)")
    print(f"\n{machine_description(args.threads)}; {len(files)} images of {args.folder}; effort {args.effort}")
    print("\n| N | selfvae-codec bpsp | PSNR | max error | model alone | JPEG-LS bpsp | JPEG XL bpsp (max error) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in summary:
        jxl = f"{row['jxl_bpsp']:.3f} ({row['jxl_max_error']:.1f})" if "jxl_bpsp" in row else "-"
        jpegls = f"{row['jpegls_bpsp']:.3f}" if "jpegls_bpsp" in row else "-"
        print(
            f"| {row['max_error']} | {row['selfvae_bpsp']:.3f} | {row['selfvae_psnr']:.2f} | "
            f"{row['selfvae_max_error']:.0f} | {row['model_only_bpsp']:.3f} | {jpegls} | {jxl} |"
        )
    print(
        "\nencode / decode seconds per image: "
        + ", ".join(f"N={r['max_error']} {r['selfvae_encode_s']:.2f} / {r['selfvae_decode_s']:.2f}" for r in summary)
    )


if __name__ == "__main__":
    main()
