"""Write benchmarks/results/README.md (every table and plot) and the short results
summary in the top README from the committed benchmark outputs in
benchmarks/results/: the tables are copied from these files, never typed.

    python benchmarks/report.py
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from report_sections import RESULTS, earlier_model_note, exact_note, load, results_document

START, END = "<!-- results:start -->", "<!-- results:end -->"


# (name, lossless results folder, evaluate output) of each validation set
VALIDATION_SETS = (
    ("BSDS500 val (JPEG-decoded photos)", RESULTS / "lossless", RESULTS / "evaluate.txt"),
    ("classic (clean scans, never JPEG)", RESULTS / "classic" / "lossless", RESULTS / "evaluate_classic.txt"),
    (
        "classic, `--effort 3` (heads adapted to each tile)",
        RESULTS / "classic" / "effort3" / "lossless",
        RESULTS / "evaluate_classic.txt",
    ),
    (
        "BSDS500 val, `--effort 3` (its first photos)",
        RESULTS / "effort3" / "lossless",
        RESULTS / "evaluate.txt",
    ),
)


def bounds(evaluation: Path) -> tuple[float, float] | None:
    """(importance-weighted bound, negative ELBO) from `selfvae-codec evaluate` output."""
    if not evaluation.is_file():
        return None
    found = re.search(
        r"negative ELBO ([\d.]+) bpd, importance-weighted \(\d+ samples\) ([\d.]+) bpd", evaluation.read_text()
    )
    return (float(found[2]), float(found[1])) if found else None


def validation_sets_table() -> list[str]:
    """Both validation sets in one table: the model's bounds, its files, the classical coders."""
    lines = [
        "| bits per subpixel | images | bound | -ELBO | the model alone | selfvae-codec `full` (tiles as PNG / WebP) "
        "| PNG | WebP lossless | JPEG XL lossless |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, folder, evaluation in VALIDATION_SETS:
        summary = load(folder / "summary.json")
        if summary is None:
            continue
        bits = summary["bits_per_subpixel"]
        bound, elbo = bounds(evaluation) or (float("nan"), float("nan"))
        classical = " | ".join(f"{bits.get(k, float('nan')):.3f}" for k in ("PNG", "WebP lossless", "JPEG XL lossless"))
        model_only = summary.get("model_only_bpsp", float("nan"))
        share = 100 * summary.get("selfvae_classical_tiles", 0.0)
        lines.append(
            f"| {name} | {summary['images']} | {bound:.3f} | {elbo:.3f} | {model_only:.3f} "
            f"| {bits['selfvae']:.3f} ({share:.0f}%) | {classical} |"
        )
    return lines


def effort3_time() -> str:
    """', X s to encode at `--effort 3`' from the effort-3 results of BSDS500 (or of
    classic), where measured."""
    for folder, name in ((RESULTS / "effort3", "BSDS500"), (RESULTS / "classic" / "effort3", "classic")):
        summary = load(folder / "lossless" / "summary.json")
        if summary is not None:
            return f" ({summary['selfvae_encode_s']:.1f} s to encode a {name} photo at `--effort 3`)"
    return ""


def lossy_summary() -> str:
    """A bullet on rs2 against JPEG and WebP (BD-rate in PSNR, and in MS-SSIM where
    measured), from the rd results."""
    summary = load(RESULTS / "rd" / "summary.json")
    bd_rate = (summary or {}).get("bd_rate_percent_psnr", {}).get("selfvae-rs2", {})
    if bd_rate.get("JPEG") is None or bd_rate.get("WebP") is None:
        return ""
    by_ms_ssim = summary.get("bd_rate_percent_ms_ssim", {}).get("selfvae-rs2", {})
    ms_ssim = ""
    if by_ms_ssim.get("JPEG") is not None and by_ms_ssim.get("WebP") is not None:
        ms_ssim = f"; in MS-SSIM {by_ms_ssim['JPEG']:+.1f}% and {by_ms_ssim['WebP']:+.1f}%"
    points = [p for p in summary["selfvae_points"] if p["codec"] == "selfvae-rs2"]
    bpp, psnr = [p["bpp"] for p in points], [p["psnr_rgb"] for p in points]
    return (
        f"- Lossy (BSDS500 val): `rs2` spans {min(bpp):.2f}-{max(bpp):.2f} bpp and {min(psnr):.1f}-{max(psnr):.1f} "
        f"dB; BD-rate (PSNR) {bd_rate['JPEG']:+.1f}% against JPEG and {bd_rate['WebP']:+.1f}% against WebP"
        + ms_ssim
        + " (plot below)."
    )


def summary_section() -> list[str]:
    """The top README's few lines: the lossless table, what it means, speed, lossy, the plots."""
    summary = load(RESULTS / "lossless" / "summary.json")
    if summary is None:
        return []
    lines = [
        "Lossless, on held-out photos (bound and -ELBO: the estimate of the float model the shipped exact one "
        "was converted from, `selfvae-codec evaluate`; the rest: real file sizes of the exact model, "
        "`benchmarks/benchmark.py --only lossless`; lower is better):",
        "",
        *earlier_model_note(summary),
        *validation_sets_table(),
        "",
        "- `full` keeps, per 512x512 tile, the smallest of the model's coding, PNG and lossless WebP (the share "
        "of tiles stored as PNG / WebP in brackets): a file is never more than its header (about 80 bytes) above "
        "PNG and WebP. The WebP column is WebP at its best (method 6).",
        "- `--effort 3` fits the model's pixel heads to each tile and sends the fit in the file (the bound and "
        "-ELBO columns are the unadapted model's).",
        f"- Time per BSDS500 photo (481x321), exact model, 2 threads on 2 CPU cores: encode "
        f"{summary['selfvae_encode_s']:.2f} s, decode {summary['selfvae_decode_s']:.2f} s{effort3_time()}.",
        *([lossy_summary()] if lossy_summary() else []),
        "- Near-lossless, the lossy modes on both sets, every table and the training curves: "
        "[benchmarks/results](benchmarks/results/README.md).",
        "",
        *exact_note(),
        "![lossless](benchmarks/results/lossless/lossless.png)",
        "![rate-distortion](benchmarks/results/rd/rate_distortion.png)",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readme", default="README.md", help="the README whose results summary to update")
    args = parser.parse_args()
    (RESULTS / "README.md").write_text(results_document())
    readme = Path(args.readme)
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme} has no {START} ... {END} markers")
    body = "\n".join(summary_section())
    text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: f"{START}\n{body}\n{END}", text, flags=re.S)
    readme.write_text(text)
    print(f"wrote {RESULTS / 'README.md'} and updated {readme}")


if __name__ == "__main__":
    main()
