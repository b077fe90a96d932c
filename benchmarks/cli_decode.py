"""Wall time of `selfvae-codec decode` per .svc file, each in a fresh process (start-up
included, as a user runs it), and whether the file needed the model.

    python benchmarks/cli_decode.py SVC_FOLDER --out benchmarks/results/cli_decode.csv

Encode a folder first, e.g. `selfvae-codec encode ../shared/data/val/classic -d SVC_FOLDER`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import write_csv

from selfvae_codec.bitstream import unpack
from selfvae_codec.codec.tiles import stored_classically


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for path in sorted(args.folder.glob("*.svc")):
            command = [sys.executable, "-m", "selfvae_codec", "decode", str(path), "-o", f"{scratch}/out.png", "-f"]
            started = time.perf_counter()
            subprocess.run([*command, "--quiet"], check=True)
            seconds = time.perf_counter() - started
            classical = stored_classically(unpack(path.read_bytes()))
            rows.append({"file": path.name, "tiles_png_or_webp_only": classical, "decode_s": f"{seconds:.3f}"})
            print(f"{path.name}: {seconds:.2f} s ({'no model needed' if classical else 'model'})")
    print(f"median {statistics.median(float(r['decode_s']) for r in rows):.2f} s over {len(rows)} files")
    if args.out:
        write_csv(args.out, rows)


if __name__ == "__main__":
    main()
