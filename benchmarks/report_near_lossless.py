"""The near-lossless sections of benchmarks/results/README.md (benchmarks/near_lossless.py's results)."""

from __future__ import annotations

from report_sections import RESULTS, load


def near_lossless_section(folder: str, adapted_folder: str | None = None) -> list[str]:
    """The near-lossless table of one validation set (benchmarks/near_lossless.py),
    with the files of an `--effort 3` run beside it where there is one."""
    summary = load(RESULTS / folder / "summary.json")
    if summary is None:
        return []
    adapted = load(RESULTS / adapted_folder / "summary.json") if adapted_folder else None
    adapted_bits = {row["max_error"]: row["selfvae_bpsp"] for row in adapted["by_max_error"]} if adapted else {}
    extra = " | `--effort 3`" if adapted else ""
    lines = [
        f"### Near-lossless ({summary['images']} images of `{summary['folder']}`)",
        "",
        f"`python benchmarks/near_lossless.py {summary['folder']} --threads 2"
        + (f" --limit {summary['images']}" if "bsds500" in summary["folder"] else "")
        + f" --out benchmarks/results/{folder}` ({summary['machine']}): `full --max-error N` files, "
        "the model alone, JPEG-LS near-lossless at the same N and JPEG XL (effort 7) at the distance that "
        "reaches the same PSNR (or lossless, where smaller), in bits per subpixel; N = 0 is lossless.",
        "",
        f"| N | selfvae-codec{extra} | PSNR | max error | model alone | JPEG-LS | JPEG XL (its max error) |",
        "| --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if adapted else ""),
    ]
    for row in summary["by_max_error"]:
        ours = f"{row['selfvae_bpsp']:.3f}"
        if adapted:
            ours += f" | {adapted_bits[row['max_error']]:.3f}" if row["max_error"] in adapted_bits else " | -"
        lines.append(
            f"| {row['max_error']} | {ours} | {row['selfvae_psnr']:.2f} dB | {row['selfvae_max_error']:.0f} | "
            f"{row['model_only_bpsp']:.3f} | {row['jpegls_bpsp']:.3f} | {row['jxl_bpsp']:.3f} "
            f"({row['jxl_max_error']:.1f}) |"
        )
    times = ", ".join(
        f"N = {r['max_error']} {r['selfvae_encode_s']:.2f} / {r['selfvae_decode_s']:.2f} s"
        for r in summary["by_max_error"]
    )
    lines += [
        "",
        f"Encode / decode per image (default effort): {times}. A tile stored as PNG or WebP decodes in "
        "milliseconds, so decode times follow the share of tiles the model codes. Every decoded image was "
        "checked against its bound.",
        "",
        *near_lossless_adapted_note(adapted, adapted_folder),
        f"![near-lossless]({folder}/near_lossless.png)",
        "",
    ]
    return lines


def near_lossless_adapted_note(adapted: dict | None, folder: str | None) -> list[str]:
    """How the `--effort 3` column was measured, and its encode time."""
    if adapted is None:
        return []
    rows = adapted["by_max_error"]
    bounds = " ".join(str(row["max_error"]) for row in rows)
    times = ", ".join(f"N = {row['max_error']} {row['selfvae_encode_s']:.1f} s" for row in rows)
    return [
        f"The `--effort 3` column (the pixel heads adapted to each tile's bins): `python benchmarks/near_lossless.py "
        f"{adapted['folder']} --threads 2 --effort 3 --no-classical --files-only --max-errors {bounds} "
        f"--out benchmarks/results/{folder}`; encode per image {times}.",
        "",
    ]
