"""The sections of benchmarks/results/README.md, each built from the committed
benchmark outputs in benchmarks/results/ (report.py writes the document)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from selfvae_codec.models.pretrained import SHIPPED_LOSSY_MODES, find_by_fingerprint, find_retired, registry

RESULTS = Path(__file__).resolve().parent / "results"
BENCHMARK_COMMAND = "python benchmarks/benchmark.py {folder} --threads {threads}{only}"
PICTURE_GRID_PHOTO = "../shared/data/val/classic/waterloo-tulips.png"


def threads_of(summary: dict) -> int:
    """The torch thread count a benchmark summary was measured with (its machine line)."""
    return int(re.search(r"torch threads (\d+)", summary["machine"]).group(1))


def load(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def earlier_models(summary: dict) -> list[tuple[str, str, str | None, str]]:
    """The models a results summary was measured with that are not the shipped ones:
    (shipped name, measured fingerprint, the earlier model's name if known, shipped
    fingerprint) for the default and the lossy model."""
    found = []
    for key, name in (("model_fingerprint", "default"), ("lossy_model_fingerprint", "lossy")):
        measured = summary.get(key)
        shipped = registry().get(name, {}).get("fingerprint")
        if measured is None or shipped is None or measured == shipped:
            continue
        found.append((name, measured, find_by_fingerprint(measured) or find_retired(measured), shipped))
    return found


def earlier_model_note(summary: dict) -> list[str]:
    """A line above a table measured with other weights than the shipped models'."""
    lines = []
    for name, measured, named, shipped in earlier_models(summary):
        earlier = f"`{named}`, an earlier model" if named else "an earlier model"
        lines += [
            f"Measured with {earlier} (fingerprint `{measured[:12]}`), not the shipped `{name}` "
            f"(`{shipped[:12]}`); not re-measured since.",
            "",
        ]
    return lines


def listed(items) -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def settings_by_mode(summary: dict) -> dict[str, str]:
    """What a selfvae-codec setting is in each mode of an rd summary: 'quality' (the
    lossy model's) in the modes that model coded (rs2 and rs1 in summaries older than
    the key), 'step' (the lossless model's latent step) in the others."""
    measured = [m for m in ("rs2", "rs1", "conditional") if f"selfvae-{m}" in summary["bd_rate_percent_psnr"]]
    lossy = summary.get("lossy_modes", ["rs2", "rs1"] if summary.get("lossy_model_fingerprint") else [])
    return {mode: "quality" if mode in lossy else "step" for mode in measured}


def settings_note(summary: dict) -> str:
    """settings_by_mode as the rd section's sentence."""
    settings = settings_by_mode(summary)
    by_lossy = [m for m, setting in settings.items() if setting == "quality"]
    by_lossless = [m for m, setting in settings.items() if setting == "step"]
    parts = []
    if by_lossy:
        parts.append("the lossy model's quality (`qN`) in " + listed(by_lossy))
    if by_lossless:
        parts.append("the lossless model's latent step in " + listed(by_lossless))
    return ", ".join(parts)


def model_section() -> list[str]:
    lines = []
    shipped = registry()
    if "default" in shipped:
        lines += ["### The shipped models", "", f"`default`: {shipped['default']['description']}.", ""]
    if "lossy" in shipped:
        lines += [f"`lossy` ({listed(SHIPPED_LOSSY_MODES)}): {shipped['lossy']['description']}.", ""]
    evaluation = RESULTS / "evaluate.txt"
    if evaluation.is_file():
        terms, summary = evaluation.read_text().strip().splitlines()[-2:]
        lines += [
            "Validation on `$DATA/val/bsds500` (whole photos, never trained on), "
            "`selfvae-codec evaluate $DATA/val/bsds500 --samples 8 --threads 2`:",
            "",
            f"    {summary}",
            f"    {terms}",
            "",
        ]
    if (RESULTS / "training_curve.png").is_file():
        lines += ["![training curve](training_curve.png)", ""]
    for comparison in sorted(RESULTS.glob("compare_*.md")):
        lines += [comparison.read_text().strip(), ""]
    if (RESULTS / "step_sweep_full.md").is_file():
        lines += [
            "Latent quantisation step of `full` mode (the default is 1.0):",
            "",
            (RESULTS / "step_sweep_full.md").read_text().strip(),
            "",
        ]
    return lines


def speed_section() -> list[str]:
    speed = RESULTS / "speed.txt"
    if not speed.is_file():
        return []
    lines = [
        "### Speed and memory",
        "",
        "`python benchmarks/speed.py $DATA/train/wikipedia/001.png --threads 2 [--mode rs2]` (`full` stores "
        "this photo's tiles as WebP, which is why its decode is fast; the encode tried the model too):",
        "",
        *("    " + line for line in speed.read_text().strip().splitlines()),
        "",
    ]
    profile = RESULTS / "speed_profile.txt"
    if profile.is_file():
        lines += [
            "Where the time goes, `python benchmarks/speed_profile.py $DATA/train/wikipedia/001.png --threads 2 "
            "[--mode rs2 --model lossy]` (every tile coded by the exact model). The convolutions' arithmetic "
            "(float64 matrix products of integers, close to the 2 cores' float64 peak) is a floor: 1.0 s of the "
            "encode and 0.8 s of the decode in `full`, 1.7 s and 1.4 s in `rs2`. The rest is the integer "
            "activations' element-wise work (ELU tables, "
            "conversions, rescaling), the pixels' probability tables (two 16-entry tables per value) and, little, "
            "the ANS coder. Times on this machine vary by up to 30% from run to run.",
            "",
            *("    " + line.replace("../shared/data", "$DATA") for line in profile.read_text().strip().splitlines()),
            "",
        ]
    large = RESULTS / "speed_large.txt"
    if large.is_file():
        note, *output = large.read_text().strip().splitlines()
        lines += [
            "A 4000x3000 photo, coded in 512x512 tiles: "
            f"`python benchmarks/speed.py --synthetic 4000x3000 --threads 2` {note}:",
            "",
            *("    " + line for line in output),
            "",
        ]
    return lines


def lossless_table(summary: dict) -> list[str]:
    names = {"selfvae": "selfvae-codec `full`"}
    rows = [f"| {names.get(k, k)} | {v:.3f} |" for k, v in summary["bits_per_subpixel"].items()]
    return [*earlier_model_note(summary), "| codec | bits per subpixel |", "| --- | --- |", *rows]


def out_option(folder: str) -> str:
    """benchmark.py's --out for the results in RESULTS/folder: none for the main
    validation set's, the set's own folder for a second one ('classic/rd')."""
    return f" --out benchmarks/results/{folder.split('/')[0]}" if "/" in folder else ""


def lossless_section(folder: str = "lossless", lossy_too: bool = True) -> list[str]:
    """The lossless table of one validation set (results in RESULTS/folder), measured
    alone or in one run with the lossy modes."""
    summary = load(RESULTS / folder / "summary.json")
    if summary is None:
        return []
    lines = [
        f"### Lossless ({summary['images']} images of `{summary['folder']}`)",
        "",
        "`"
        + BENCHMARK_COMMAND.format(
            folder=summary["folder"], threads=threads_of(summary), only=out_option(folder) + " --only lossless"
        )
        + "`:",
        "",
        *lossless_table(summary),
    ]
    lines += [
        "",
        f"- Model estimate (-log2 p of the coded symbols): {summary['selfvae_estimate_bpsp']:.3f} bits "
        f"per subpixel, so the codec's overhead (ANS, header, section table) is "
        f"{summary['overhead_percent']:.2f}%.",
        f"- The model alone (every tile coded by it): {summary.get('model_only_bpsp', float('nan')):.3f} bits per "
        f"subpixel; {100 * summary.get('selfvae_classical_tiles', 0.0):.0f}% of the tiles were stored as PNG or "
        "lossless WebP instead.",
        f"- Encode {summary['selfvae_encode_s']:.2f} s, decode {summary['selfvae_decode_s']:.2f} s per image; "
        f"model loading {summary['model_load_s']:.2f} s ({summary['machine']}).",
        "- Every result, ours and the classical codecs', was checked to round-trip exactly.",
        "",
        f"![lossless]({folder}/lossless.png)",
        "",
    ]
    return lines


def bd_rate_table(summary: dict, anchors: list[str]) -> list[str]:
    """BD-rate of each mode against each anchor, in PSNR and (where measured) MS-SSIM."""
    metrics = [("PSNR", summary["bd_rate_percent_psnr"])]
    if "bd_rate_percent_ms_ssim" in summary:
        metrics.append(("MS-SSIM", summary["bd_rate_percent_ms_ssim"]))
    columns = [(metric, anchor) for metric, _ in metrics for anchor in anchors]
    lines = [
        "BD-rate, % (negative: fewer bits for the same quality; `-` where the curves do not overlap in "
        "quality or a curve's quality barely moves):",
        "",
        "| mode | " + " | ".join(f"against {anchor}, {metric}" for metric, anchor in columns) + " |",
        "| --- | " + " | ".join("---" for _ in columns) + " |",
    ]
    for mode in metrics[0][1]:
        cells = [dict(metrics)[metric][mode].get(anchor) for metric, anchor in columns]
        cells = ["-" if value is None else f"{value:+.1f}" for value in cells]
        lines.append(f"| {mode.removeprefix('selfvae-')} | " + " | ".join(cells) + " |")
    return lines


def reused_models_clause(summary: dict) -> str:
    """Which lossy model the reused rows of selfvae-codec's modes were measured with,
    where it is not this summary's: ', <modes> with `<name>` (<fingerprint>)', or ''."""
    lossy = summary.get("lossy_model_fingerprint")
    by_model: dict[str, list[str]] = {}
    for mode, fingerprint in (summary.get("reused_rows") or {}).get("reused_models", {}).items():
        if fingerprint and fingerprint != lossy:
            by_model.setdefault(fingerprint, []).append(mode)
    parts = [
        f"{listed(modes)} with `{find_by_fingerprint(fp) or find_retired(fp) or 'an earlier model'}` ({fp[:12]})"
        for fp, modes in by_model.items()
    ]
    return f", selfvae-codec's {'; '.join(parts)}" if parts else ""


def rd_section(folder: str = "rd") -> list[str]:
    """The lossy modes' table of one validation set (results in RESULTS/folder)."""
    summary = load(RESULTS / folder / "summary.json")
    if summary is None:
        return []
    anchors = list(summary["anchor_ranges_bpp"])
    rd_options, reuse_note = " --only rd", ""
    reused = summary.get("reused_rows")
    if reused:  # only these modes measured, the other rows taken from the previous run
        rd_options += f" --modes {','.join(reused['measured_modes'])} --reuse {reused['from']}"
        reuse_note = (
            f"Only {listed(reused['measured_modes'])} {'was' if len(reused['measured_modes']) == 1 else 'were'} "
            "measured in this run; the other rows "
            "(the classical codecs, and selfvae-codec's other modes) are those of "
            f"the previous run of this table, on the same images{reused_models_clause(summary)}. "
        )
    elif "/" in folder:  # a second validation set: only the modes it was run with
        modes = ",".join(dict.fromkeys(p["codec"].removeprefix("selfvae-") for p in summary["selfvae_points"]))
        rd_options += f" --modes {modes}"
    lossy_modes = summary.get("lossy_modes")
    if lossy_modes and tuple(lossy_modes) != SHIPPED_LOSSY_MODES:
        rd_options += f" --lossy-modes {','.join(lossy_modes)}"
    rd_options = out_option(folder) + rd_options
    lines = [
        f"### Lossy modes ({summary['images']} images of `{summary['folder']}`)",
        "",
        *earlier_model_note(summary),
        f"`{BENCHMARK_COMMAND.format(folder=summary['folder'], threads=threads_of(summary), only=rd_options)}` "
        f"({summary['machine']}). "
        + reuse_note
        + "Each selfvae-codec point is the mean over the images at one setting: "
        + settings_note(summary)
        + "; beside it, the PSNR of the "
        "anchors' mean curves at the same bpp (interpolated in log-rate between their two nearest quality "
        "settings; `-` where the anchor cannot reach that rate: "
        + ", ".join(f"{a} spans {lo:.3f}-{hi:.3f} bpp" for a, (lo, hi) in summary["anchor_ranges_bpp"].items())
        + ").",
        "",
        "| mode | setting | bpp | PSNR (dB) | MS-SSIM | "
        + " | ".join(f"{a} PSNR at this bpp" for a in anchors)
        + " | encode s | decode s |",
        "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in anchors) + " | --- | --- |",
    ]
    for p in summary["selfvae_points"]:
        at = " | ".join("-" if v is None else f"{v:.2f}" for v in p["anchor_psnr"].values())
        lines.append(
            f"| {p['codec'].removeprefix('selfvae-')} | {p['setting']} | {p['bpp']:.3f} | "
            f"{p['psnr_rgb']:.2f} | {p['ms_ssim_rgb']:.4f} | {at} | {p['encoding_time']:.2f} | "
            f"{p['decoding_time']:.2f} |"
        )
    lines += ["", *bd_rate_table(summary, anchors), ""]
    lines += [
        f"![rate-distortion]({folder}/rate_distortion.png)",
        "",
        f"The anchors' full curves (JPEG, WebP, AVIF, JPEG XL) are in `{folder}/*.json`.",
        "",
    ]
    if folder != "rd":
        return lines
    if (RESULTS / "rd" / "picture_grid.webp").is_file():
        lines += [
            "One photo in every mode and quality, JPEG at the same rates below "
            f"(`python benchmarks/picture_grid.py {PICTURE_GRID_PHOTO} --crop 256`):",
            "",
            "![picture grid](rd/picture_grid.webp)",
            "",
        ]
    for diagnostic in ("latent_use.md", "conditional_ceiling.md"):
        if (RESULTS / diagnostic).is_file():
            lines += [(RESULTS / diagnostic).read_text().strip(), ""]
    return lines


INTRODUCTION = """# Results

Every table here is written by `benchmarks/report.py` from the files in this folder;
`bash benchmarks/run_all.sh DATA_DIR` measures them again (`$DATA` below is that data
folder: `train/`, `val/bsds500`). Machine: 2 CPU cores (x86-64), no GPU, torch 2.13.0
CPU build, 2 torch threads unless stated. Times from different sessions on this
nominal machine differ (the same architecture encoded a validation photo in 2.63 s
one day and 1.08 s the next), so compare times only within one table. The logs of
finished training runs are the compact CSVs in `runs/` here; how the runs came about
is in [docs/training.md](../../docs/training.md).
"""


def upscale_section() -> list[str]:
    summary = load(RESULTS / "upscale" / "summary.json")
    if summary is None:
        return []
    methods = ["nearest", "bicubic", "Lanczos", "selfvae-codec"]
    lines = [
        f"### Upscaling ({summary['images']} images of `{summary['folder']}`)",
        "",
        *earlier_model_note(summary),
        f"`python benchmarks/upscale.py {summary['folder']} --threads 2` ({summary['machine']}): each photo "
        "downscaled 2, 4 and 8 times with the model's own transform, then brought back by each method "
        "(`selfvae-codec upscale`, `--method mean`); PSNR and MS-SSIM against the original.",
        "",
        "| factor | " + " | ".join(methods) + " |",
        "| --- | " + " | ".join("---" for _ in methods) + " |",
    ]
    for factor in (2, 4, 8):
        cells = [summary["mean"][f"{factor}x {m}"] for m in methods]
        lines.append(f"| {factor}x | " + " | ".join(f"{c['psnr']:.2f} dB, {c['ms_ssim']:.4f}" for c in cells) + " |")
    seconds = ", ".join(f"{k} {v:.2f} s" for k, v in summary["selfvae_seconds_per_image"].items())
    lines += [
        "",
        f"selfvae-codec's time per photo: {seconds}. A crop of the first photo at 4x, "
        "original | bicubic | selfvae-codec:",
        "",
        "![upscaling](upscale/upscale_crop.png)",
        "",
    ]
    return lines


# benchmarks/exact_vs_float.py's outputs: the lossless model's, then the lossy model's
EXACT_COMPARISONS = ("exact_default2", "exact_lossy")  # the shipped default and lossy


def exact_section() -> list[str]:
    """The exact models against their float sources (benchmarks/exact_vs_float.py)."""
    tables = [RESULTS / folder / "summary.md" for folder in EXACT_COMPARISONS]
    found = [table.read_text().strip() for table in tables if table.is_file()]
    if not found:
        return []
    return ["### The exact model against its float source", "", "\n\n".join(found), ""]


def exact_gaps(folder: str) -> tuple[str, float, list[float]] | None:
    """(the exact model's name, the largest gap in a lossy mode's mean PSNR between it and
    its float source, its time over the float model's per lossy mode), or None."""
    table = RESULTS / folder / "per_image.csv"
    if not table.is_file():
        return None
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    float_model, exact_model = dict.fromkeys(row["model"] for row in rows)  # in the order measured

    def mean_psnr(mode: str, model: str) -> float:
        values = [float(r["psnr"]) for r in rows if r["mode"] == mode and r["model"] == model]
        return sum(values) / len(values)

    def total_seconds(mode: str, model: str) -> float:
        chosen = [r for r in rows if r["mode"] == mode and r["model"] == model]
        return sum(float(r["encode_s"]) + float(r["decode_s"]) for r in chosen)

    lossy = {row["mode"] for row in rows} - {"full"}
    gap = max(abs(mean_psnr(mode, exact_model) - mean_psnr(mode, float_model)) for mode in lossy)
    return exact_model, gap, [total_seconds(mode, exact_model) / total_seconds(mode, float_model) for mode in lossy]


def exact_note() -> list[str]:
    """The README's line on them: per model, the largest PSNR gap and the slowdown."""
    measured = [gaps for gaps in map(exact_gaps, EXACT_COMPARISONS) if gaps]
    if not measured:
        return []
    parts = [
        f"`{name}` by at most {gap:.3f} dB, {min(slowdowns):.1f}-{max(slowdowns):.1f}x slower"
        for name, gap, slowdowns in measured
    ]
    return [
        "The shipped models are exact (integer arithmetic: their files decode on every machine). Against the "
        "float models they were converted from, their lossy modes' mean PSNR differs and their time to encode "
        "and decode grows: " + "; ".join(parts) + " "
        "([the comparison](benchmarks/results/README.md#the-exact-model-against-its-float-source), "
        "[docs/exact.md](docs/exact.md) for the lossless rates).",
        "",
    ]


def results_document() -> str:
    sections = (
        model_section()
        + lossless_section(lossy_too=False)
        + lossless_section("classic/lossless", lossy_too=False)
        + exact_section()
    )
    from report_near_lossless import near_lossless_section  # it reads this module's RESULTS and load

    near_lossless = near_lossless_section("near_lossless") + near_lossless_section(
        "classic/near_lossless", "classic/near_lossless_effort3"
    )
    from report_lossy_effort import lossy_effort_section

    lossy = rd_section() + rd_section("classic/rd") + lossy_effort_section()
    body = "\n".join(sections + near_lossless + speed_section() + lossy + upscale_section())
    return INTRODUCTION + "\n" + body.replace("../shared/data", "$DATA").rstrip() + "\n"
