"""Run by test_exact.py in a subprocess under one environment (CPU capability, oneDNN
ISA, thread count): encode the test images in every mode with the shipped exact model
(and near-lossless `full` at NEAR_LOSSLESS_ERROR), and in rs2, rs1 and conditional at
two qualities with the shipped lossy model, into OUT; decode every .svc in DECODE_DIR
(if given); print the SHA-256 of each decoded image's pixels as JSON."""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from selfvae_codec.codec.api import Codec
from selfvae_codec.models.pretrained import SHIPPED_LOSSY_MODES

DATA = Path(__file__).parent / "data"
# An image larger than its tiles with odd sides, and one tile of another image.
CASES = (("chelsea_75x50.png", 32), ("coffee_96x64.png", 512))
MODES = ("full", "conditional", "rs2", "rs1")
LOSSY_QUALITIES = (2, 6)
NEAR_LOSSLESS_ERROR = 3


def main(out: Path, threads: int, decode_dir: Path | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for source, tile in CASES:
        codec = Codec("default", threads=threads, tile_size=tile)
        for mode in MODES:
            data = codec.compress(DATA / source, mode, classical_tiles=False)
            (out / f"{Path(source).stem}_{mode}.svc").write_bytes(data)
        data = codec.compress(DATA / source, "full", classical_tiles=False, max_error=NEAR_LOSSLESS_ERROR)
        (out / f"{Path(source).stem}_full_max_error_{NEAR_LOSSLESS_ERROR}.svc").write_bytes(data)
        lossy_codec = Codec("lossy", threads=threads, tile_size=tile)
        for mode in SHIPPED_LOSSY_MODES:
            for quality in LOSSY_QUALITIES:
                data = lossy_codec.compress(DATA / source, mode, quality=quality)
                (out / f"{Path(source).stem}_lossy_{mode}_q{quality}.svc").write_bytes(data)
    decoded = {}
    if decode_dir is not None:
        codecs = [Codec("default", threads=threads), Codec("lossy", threads=threads)]
        for path in sorted(decode_dir.glob("*.svc")):
            codec = codecs["_lossy_" in path.name]
            image = codec.decompress(path)
            decoded[path.name] = hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()
    print(json.dumps(decoded))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) > 3 else None)
