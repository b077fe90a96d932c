"""Training throughput of a model config: 64x64 patches per second, forward + backward
+ AdaMax step, with an explicit thread count.

    python benchmarks/train_throughput.py --threads 2 --batch-size 16 --steps 20
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from selfvae_codec.models.config import ModelConfig
from selfvae_codec.models.selfvae import SelfVAE, parameter_count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed steps (after 3 warm-up steps)")
    parser.add_argument("--config", default="{}", help="model config overrides as JSON")
    parser.add_argument("--compile", action="store_true", help="torch.compile the ELBO (inductor)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SelfVAE(ModelConfig.from_dict(json.loads(args.config)))
    batch = torch.randint(0, 256, (args.batch_size, 3, args.crop, args.crop))
    model.initialize(batch)
    optimizer = torch.optim.Adamax(model.parameters(), lr=1e-3)

    elbo = torch.compile(model.elbo_bpd) if args.compile else model.elbo_bpd

    def step() -> None:
        loss = elbo(batch)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    elapsed = time.perf_counter() - started
    patches = args.steps * args.batch_size / elapsed
    print(f"parameters: {parameter_count(model):,}")
    print(f"threads: {args.threads}, batch {args.batch_size}, {args.crop}x{args.crop} crops")
    print(f"training throughput: {patches:.1f} patches/s ({patches * args.crop**2 / 1e3:.0f}k pixels/s)")


if __name__ == "__main__":
    main()
