"""Training loop: AdaMax with warm-up, data-dependent initialisation, gradient
clipping, a guard against non-finite steps, KL warm-up and free bits on z, an
exponential moving average of the weights, periodic validation, JSON-lines
logging, and checkpoints that resume exactly.

Runs as a single process, or under `torchrun --nproc_per_node N` with
DistributedDataParallel (gloo on CPU, NCCL on CUDA).
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..codec.images import list_images
from ..models.config import ModelConfig
from ..models.io import read_metadata, save_model
from ..models.selfvae import SelfVAE
from .data import RandomCropSampler, training_sources, validation_crops
from .rate_distortion import lossy_model_from, parse_lambdas, rate_distortion_loss, validate_rate_distortion
from .settings import TrainSettings


def learning_rate(settings: TrainSettings, step: int, warmup_start: int = 0) -> float:
    """The rate for the optimiser step taken at `step` (counting from 0): a linear
    warm-up from `warmup_start`, constant, then, with `decay_from`, a linear fall
    that would reach zero at `settings.steps`."""
    warmed = step - warmup_start + 1
    rate = settings.lr * min(1.0, warmed / max(1, settings.warmup_steps))
    if settings.decay_from is not None and step >= settings.decay_from:
        rate *= max(0.0, settings.steps - step) / max(1, settings.steps - settings.decay_from)
    return rate


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


def training_loss(terms: dict[str, torch.Tensor], kl_weight: float, free_bits: float, dims: int) -> torch.Tensor:
    """Mean over the batch of the negative ELBO in nats per dimension (so gradient
    norms do not scale with the crop size), with the KL terms weighted by
    `kl_weight` and each z channel's average KL per element floored at `free_bits`."""
    reconstruction = sum(v for k, v in terms.items() if k.startswith("re_"))
    kl = terms["kl_u"]
    for kl_map in terms["_kl_z_maps"]:
        per_channel = kl_map.mean(dim=(0, 2, 3))
        positions = kl_map.shape[2] * kl_map.shape[3]
        kl = kl + per_channel.clamp(min=free_bits).sum() * positions
    return (reconstruction + kl_weight * kl).mean() / dims


# A run folder's files: the trainer writes and resumes them, `grow` writes a new run.
CHECKPOINT_FILE = "checkpoint.pt"
AVERAGE_FILE = "latest.safetensors"  # the moving average of the weights (what ships)
LOG_FILE = "log.jsonl"


def save_checkpoint_file(state: dict, path: Path) -> None:
    """torch.save through a temporary file, so a crash never leaves half a checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def stored_average(run_dir: Path, state: dict) -> dict[str, torch.Tensor] | None:
    """The moving average's tensors the checkpoint `state` names (by fingerprint):
    RUN_DIR/latest.safetensors, or the shipped model's weights when that average was
    shipped (so a committed run need not keep a second copy of them); None when
    neither is it (a crash between the writes)."""
    from ..models.pretrained import PRETRAINED_DIR, registry

    shipped = [PRETRAINED_DIR / entry["file"] for entry in registry().values() if "file" in entry]
    for path in [run_dir / AVERAGE_FILE, *shipped]:
        if path.is_file() and read_metadata(path).get("fingerprint") == state["ema_fingerprint"]:
            return load_file(str(path))
    return None


def _rng_state(sampler: RandomCropSampler) -> dict:
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "sampler": json.dumps(sampler.state()),
    }


def _restore_rng(state: dict, sampler: RandomCropSampler) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    sampler.set_state(json.loads(state["sampler"]))


class Trainer:
    def __init__(self, settings: TrainSettings):
        self.s = settings
        self.rank, self.world = _distributed()
        torch.set_num_threads(settings.threads)
        self.device = torch.device(settings.device)
        self.owns_process_group = False
        if self.world > 1 and not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend)
            self.owns_process_group = True
            if self.device.type == "cuda":
                self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(self.device)
        if settings.minutes is not None and self.world > 1:
            raise ValueError("--minutes stops a single process; under torchrun, use --steps")
        self.out = Path(settings.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.checkpoint_path = self.out / CHECKPOINT_FILE
        self.log_path = self.out / LOG_FILE
        torch.manual_seed(settings.seed + self.rank)
        random.seed(settings.seed + self.rank)
        self.sampler = RandomCropSampler(
            training_sources(settings.train_dirs),
            settings.crop,
            seed=settings.seed + 1000 * self.rank,
            min_scale=settings.min_scale,
            native_fraction=settings.native_fraction,
            jpeg_max_scale=settings.jpeg_max_scale,
            clean_weight=settings.clean_weight,
        )
        # log kind suffix -> validation crops: "" for --val, "_NAME" for --extra-val-dir NAME
        self.val_batches: dict[str, torch.Tensor] = {}
        for suffix, folder in (
            ("", settings.val_dir),
            (f"_{Path(settings.extra_val_dir or '').name}", settings.extra_val_dir),
        ):
            if folder:
                files = list_images([folder])[: settings.val_images]
                self.val_batches[suffix] = torch.from_numpy(validation_crops(files, settings.val_crop, per_image=1))
        self.step = 0
        self.best_val = math.inf
        self.skipped_steps = 0
        self.train_seconds = 0.0
        # The step the learning-rate warm-up counts from: 0, or the step a run was
        # grown at (see training/grow.py).
        self.warmup_start = 0
        resume = self.checkpoint_path.is_file()
        if resume:
            state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
            self.model = SelfVAE(ModelConfig.from_json(state["config"]))
        elif settings.init_from:
            self.model = self._model_from(settings.init_from, settings.config)
        else:
            self.model = SelfVAE(ModelConfig.from_dict(settings.config) if settings.config else ModelConfig())
        self.model.to(self.device)
        self.lambdas = None
        if self.model.config.lossy:
            self.lambdas = torch.tensor(parse_lambdas(settings.lambdas))
            qualities = self.model.config.qualities
            if len(self.lambdas) != qualities:
                raise ValueError(f"--lambdas gives {len(self.lambdas)} trade-offs for a model of {qualities} qualities")
            if self.world > 1 or settings.compile:
                raise ValueError("a lossy model trains in one process, without --compile")
        self.optimizer = torch.optim.Adamax(self.model.parameters(), lr=settings.lr)
        if resume:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.step = state["step"]
            self.best_val = state["best_val"]
            self.skipped_steps = state["skipped_steps"]
            self.train_seconds = state["train_seconds"]
            self.warmup_start = state.get("warmup_start", 0)
            rng = state["rng"][self.rank] if self.rank < len(state["rng"]) else None
            if rng is not None:
                _restore_rng(rng, self.sampler)
        elif not settings.init_from:
            init_batch = torch.from_numpy(self.sampler.batch(settings.batch_size)).to(self.device)
            self.model.initialize(init_batch)
        # The average starts from the current weights (its first update copies them).
        self.ema = None
        if settings.ema_decay > 0:
            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(settings.ema_decay))
            if resume and "ema_fingerprint" in state:
                self._restore_average(state)
        self.resumed = resume
        self.net = self.model
        if self.world > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(self.model)  # syncs rank 0's weights
        # Only the training step is compiled; validation and coding run eagerly.
        self.forward = torch.compile(self.net) if settings.compile else self.net

    @staticmethod
    def _model_from(name: str, overrides: dict) -> SelfVAE:
        """A new run's model from trained weights: the same model, or, with
        overrides {"qualities": N}, the lossy model that starts from it."""
        from ..models.pretrained import load_named_model

        source = load_named_model(name)
        if set(overrides) - {"qualities"}:
            raise ValueError('--init-from takes no --config but {"qualities": N}')
        if overrides.get("qualities"):
            return lossy_model_from(source, overrides["qualities"]).train()
        if source.config.exact:
            raise ValueError(f"{name} is an exact model: train from its float source")
        return source.train()

    # -- bookkeeping ---------------------------------------------------------------
    def _lr(self) -> float:
        return learning_rate(self.s, self.step, self.warmup_start)

    def _kl_weight(self) -> float:
        return min(1.0, (self.step + 1) / max(1, self.s.kl_warmup_steps))

    def _gather_rng(self) -> list:
        mine = _rng_state(self.sampler)
        if self.world == 1:
            return [mine]
        gathered = [None] * self.world
        dist.all_gather_object(gathered, mine)
        return gathered

    def save_checkpoint(self) -> None:
        rng = self._gather_rng()
        if self.rank != 0:
            return
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "best_val": self.best_val,
            "skipped_steps": self.skipped_steps,
            "train_seconds": self.train_seconds,
            "warmup_start": self.warmup_start,
            "rng": rng,
            "config": self.model.config.to_json(),
            "settings": json.dumps(asdict(self.s)),
        }
        # The moving average is stored once, in latest.safetensors; the checkpoint
        # names it by fingerprint (and keeps the committed checkpoint under 20 MB).
        extra = {"step": self.step, "ema_decay": self.s.ema_decay if self.ema is not None else 0.0}
        fingerprint = save_model(self.shipped_model(), self.out / AVERAGE_FILE, extra=extra)
        if self.ema is not None:
            state["ema_fingerprint"] = fingerprint
            state["ema_updates"] = int(self.ema.n_averaged)
        save_checkpoint_file(state, self.checkpoint_path)

    def _restore_average(self, state: dict) -> None:
        """Load the moving average from latest.safetensors if it is the one the
        checkpoint names; otherwise (a crash between the two writes) restart it
        from the resumed weights, and say so."""
        average = stored_average(self.out, state)
        if average is None:
            path = self.out / AVERAGE_FILE
            print(f"warning: {path} is not the checkpoint's moving average; restarting it", flush=True)
            return
        # Straight into the average's module: building a model here would draw from
        # the RNG that was just restored.
        self.ema.module.load_state_dict(average)
        self.ema.n_averaged.fill_(state["ema_updates"])

    def shipped_model(self) -> SelfVAE:
        """The weights to validate and ship: the moving average when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def _log(self, record: dict) -> None:
        if self.rank == 0:
            with open(self.log_path, "a") as handle:
                handle.write(json.dumps(record) + "\n")

    @torch.no_grad()
    def validate(self, model: SelfVAE, crops: torch.Tensor) -> dict[str, float]:
        if self.lambdas is not None:
            model.eval()
            out = validate_rate_distortion(model, crops, self.lambdas.tolist(), self.device)
            model.train()
            return out
        model.eval()
        sums: dict[str, float] = {}
        count = 0
        generator_state = torch.get_rng_state()
        torch.manual_seed(12345)  # the same posterior samples every time
        for start in range(0, len(crops), 8):
            batch = crops[start : start + 8].to(self.device)
            terms = model.elbo_bpd(batch)
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value) * len(batch)
            count += len(batch)
        torch.set_rng_state(generator_state)
        model.train()
        return {name: value / count for name, value in sums.items()}

    def _validate_all(self) -> str:
        """Validate the raw weights and their moving average on every held-out set,
        log each (kinds val / val_ema, with the set's suffix), and say it in a line."""
        parts = []
        for suffix, crops in self.val_batches.items():
            val = self.validate(self.model, crops)
            self._log({**val, "step": self.step, "kind": f"val{suffix}"})
            unit = "loss" if self.lambdas is not None else "bpd"
            part = f"validation{suffix.replace('_', ' ')} {val['total']:.4f} {unit}"
            if self.ema is not None:
                val = self.validate(self.ema.module, crops)
                self._log({**val, "step": self.step, "kind": f"val_ema{suffix}"})
                part += f" (moving average {val['total']:.4f})"
            if not suffix:
                self.best_val = min(self.best_val, val["total"])
            parts.append(part)
        return f"step {self.step}: " + ", ".join(parts)

    # -- the loop ------------------------------------------------------------------
    def train_step(self) -> dict[str, float] | None:
        batch = torch.from_numpy(self.sampler.batch(self.s.batch_size)).to(self.device)
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr()
        if self.lambdas is not None:
            loss, out = rate_distortion_loss(
                self.model,
                batch,
                self.lambdas,
                self.s.coarse_weight,
                self.s.conditional_weight,
                self.s.mixed_quantisation,
            )
        else:
            terms = self.forward(batch)
            loss = training_loss(terms, self._kl_weight(), self.s.free_bits, self.model.dimensions(batch))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.s.grad_clip)
        finite = torch.isfinite(loss) & torch.isfinite(grad_norm)
        if self.world > 1:  # every replica must take (or skip) the same step
            flag = finite.to(torch.float32)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            finite = flag > 0
        if not bool(finite):
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped_steps += 1
            return None
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        if self.lambdas is None:
            scale = 1.0 / (self.model.dimensions(batch) * math.log(2))
            out = {k: float(v.detach().mean()) * scale for k, v in terms.items() if not k.startswith("_")}
            out["total"] = sum(out.values())
        out["grad_norm"] = float(grad_norm)
        return out

    def _progress_fields(self, result: dict[str, float]) -> dict[str, str]:
        if self.lambdas is not None:
            return {"loss": f"{result['total']:.3f}", "bpp": f"{result['bpp']:.3f}", "mse": f"{result['mse']:.1f}"}
        kl_z = sum(v for k, v in result.items() if k.startswith("kl_z"))
        return {"bpd": f"{result['total']:.3f}", "re_x": f"{result['re_x']:.3f}", "kl_z": f"{kl_z:.3f}"}

    def close(self) -> None:
        """Tear down the process group this trainer started. Without this and the
        barrier at the end of `run`, a replica leaving right after the last collective
        aborted the other ("terminate called without an active exception", SIGABRT)
        in about one 2-process test run in four."""
        if self.owns_process_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_process_group = False

    def run(self) -> None:
        stop = {"now": False}

        def request_stop(signum, frame):
            # Finish the current step, then save: a checkpoint taken mid-step would
            # not resume exactly. A second Ctrl-C aborts at once.
            if stop["now"] and signum == signal.SIGINT:
                raise KeyboardInterrupt
            stop["now"] = True
            if self.rank == 0:
                print("\nstopping after this step: saving a checkpoint", flush=True)

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        progress = None
        if self.s.progress and self.rank == 0:
            from tqdm import tqdm

            progress = tqdm(total=self.s.steps, initial=self.step, unit="step", dynamic_ncols=True)
        self.model.train()
        window: list[dict] = []
        window_start = time.perf_counter()
        deadline = math.inf if self.s.minutes is None else time.monotonic() + 60 * self.s.minutes
        try:
            while self.step < self.s.steps and not stop["now"] and time.monotonic() < deadline:
                started = time.perf_counter()
                result = self.train_step()
                self.train_seconds += time.perf_counter() - started
                self.step += 1
                if result is not None:
                    window.append(result)
                if progress is not None:
                    progress.update(1)
                    if result is not None:
                        progress.set_postfix(self._progress_fields(result))
                if self.step % self.s.log_every == 0 and window:
                    elapsed = time.perf_counter() - window_start
                    record = {k: sum(r[k] for r in window) / len(window) for k in window[0]}
                    record.update(
                        step=self.step,
                        lr=self._lr(),
                        skipped=self.skipped_steps,
                        patches_per_s=len(window) * self.s.batch_size * self.world / elapsed,
                        train_seconds=self.train_seconds,
                        kind="train",
                    )
                    self._log(record)
                    window, window_start = [], time.perf_counter()
                if self.val_batches and self.step % self.s.val_every == 0 and self.rank == 0:
                    message = self._validate_all()
                    if progress is not None:
                        progress.write(message)
                if self.step % self.s.checkpoint_every == 0:
                    self.save_checkpoint()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if progress is not None:
                progress.close()
        self.save_checkpoint()
        if self.world > 1:
            self.check_replicas()
            # No replica may leave (and close its connections) while another is
            # still inside the last collective.
            dist.barrier()

    def check_replicas(self) -> bool:
        """Log whether every DDP replica holds bit-identical weights."""
        fingerprints = [None] * self.world
        dist.all_gather_object(fingerprints, self.model.fingerprint())
        identical = len(set(fingerprints)) == 1
        self._log({"kind": "replica_check", "step": self.step, "identical": identical, "fingerprints": fingerprints})
        return identical
