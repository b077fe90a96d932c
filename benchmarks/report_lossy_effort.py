"""The lossy encoder's effort section of benchmarks/results/README.md (benchmarks/lossy_effort.py's results)."""

from __future__ import annotations

from report_sections import RESULTS, load


def lossy_effort_section() -> list[str]:
    """One table per run (a folder of results/lossy_effort): each effort's BD-rate
    against effort 2 and the anchors, its points and its encode / decode time."""
    runs = sorted((RESULTS / "lossy_effort").glob("*/summary.json"))
    summaries = [summary for summary in map(load, runs) if summary]
    if not summaries:
        return []
    lines = [
        "### The lossy encoder's effort (`encode --mode rs2 --effort N`)",
        "",
        "rs2 at qualities 1-6 with the latents the encoder infers (effort 2, the default) and with latents "
        "optimised by stochastic Gumbel annealing on the exact model's float twin (effort 3 and up; "
        "codec/latent_optimisation.py). BD-rate in PSNR from the mean bpp and PSNR over the images at each "
        "quality; every file decoded and checked against the encoder's prediction.",
        "",
    ]
    for summary in summaries:
        targets = summary.get("targets")  # a run coded to rates (--target-bpp), not at qualities
        anchors = [] if targets else list(summary["efforts"][0]["bd_rate"])
        crop = f", their centre {summary['crop']}x{summary['crop']} crops" if summary["crop"] else ""
        every = f" --every {summary['every']}" if summary["every"] > 1 else ""
        efforts = ",".join(str(entry["effort"]) for entry in summary["efforts"])
        settings = f"targets {', '.join(f'{t:g}' for t in targets)} bpp" if targets else "q1 .. q6"
        lines += [
            f"{summary['images']} images of `{summary['folder']}`{crop}: `python benchmarks/lossy_effort.py "
            f"{summary['folder']}{every}"
            + (f" --crop {summary['crop']}" if summary["crop"] else "")
            + f" --efforts {efforts}"
            + (f" --targets {','.join(f'{t:g}' for t in targets)}" if targets else "")
            + f" --threads 1` ({summary['machine']}):",
            "",
            "| effort | " + "".join(f"BD-rate vs {name} | " for name in anchors) + f"bpp / dB, {settings} | "
            f"encode / decode per image and {'target' if targets else 'quality'} |",
            "| --- | " + "".join("--- | " for _ in anchors) + "--- | --- |",
        ]
        for entry in summary["efforts"]:
            rates = "".join(
                "- | " if v is None else f"{v:+.1f}% | " for name, v in entry["bd_rate"].items() if name in anchors
            )
            points = " ".join(f"{bpp:.3f}/{db:.2f}" for bpp, db in entry["curve"])
            lines.append(
                f"| {entry['effort']} | {rates}{points} | {entry['encode_s']:.1f} / {entry['decode_s']:.2f} s |"
            )
        lines.append("")
    return lines
