"""Regenerate the README's results section from the committed benchmark outputs
(benchmarks/results/): the tables there are copied from these files, never typed.

    python benchmarks/report.py --readme README.md
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def load(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def lossless_section() -> list[str]:
    summary = load(RESULTS / "lossless" / "summary.json")
    if summary is None:
        return []
    names = {"selfvae": "selfvae-codec `full`"}
    lines = [
        f"### Lossless ({summary['images']} images of `{summary['folder']}`)",
        "",
        "| codec | bits per subpixel |",
        "| --- | --- |",
    ]
    lines += [f"| {names.get(k, k)} | {v:.3f} |" for k, v in summary["bits_per_subpixel"].items()]
    lines += [
        "",
        f"- Model estimate (-log2 p of the coded symbols): {summary['selfvae_estimate_bpsp']:.3f} bits "
        f"per subpixel, so the codec's overhead (ANS, header, section table) is "
        f"{summary['overhead_percent']:.2f}%.",
        f"- Encode {summary['selfvae_encode_s']:.2f} s, decode {summary['selfvae_decode_s']:.2f} s per image; "
        f"model loading {summary['model_load_s']:.2f} s ({summary['machine']}).",
        "- Every result, ours and the classical codecs', was checked to round-trip exactly.",
        "",
        "![lossless](benchmarks/results/lossless/lossless.png)",
        "",
    ]
    return lines


def rd_section() -> list[str]:
    bd = load(RESULTS / "rd" / "bd_rate.json")
    if bd is None:
        return []
    lines = [
        "### Lossy modes",
        "",
        "| codec | setting | bpp | PSNR (dB) | MS-SSIM | encode s | decode s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for path in sorted((RESULTS / "rd").glob("*.json")):
        data = load(path)
        if "results" not in data:
            continue
        r = data["results"]
        for i in range(len(r["bpp"])):
            lines.append(
                f"| {data['name']} | {r['setting'][i]} | {r['bpp'][i]:.3f} | {r['psnr-rgb'][i]:.2f} | "
                f"{r['ms-ssim-rgb'][i]:.4f} | {r['encoding_time'][i]:.2f} | {r['decoding_time'][i]:.2f} |"
            )
    lines += [
        "",
        "BD-rate in PSNR against the anchors (negative is better; `None` where the curves do not "
        "overlap in PSNR): " + json.dumps(bd["bd_rate_percent_psnr"]),
        "",
        "![rate-distortion](benchmarks/results/rd/rate_distortion.png)",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readme", default="README.md")
    args = parser.parse_args()
    readme = Path(args.readme)
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme} has no {START} ... {END} markers")
    body = "\n".join(lossless_section() + rd_section())
    text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: f"{START}\n{body}\n{END}", text, flags=re.S)
    readme.write_text(text)
    print(f"updated {readme}")


if __name__ == "__main__":
    main()
