"""The runtime the training scripts share: processes, seeds and RNG streams, the resumable data order, snapshots
and resuming, logs.

- Processes (torchrun): `DistInfo`, `init_distributed`, `run_distributed` (writes options.json, runs a loop),
  `reduce_gradients` / `average_buffers` / `broadcast_weights` / `check_ranks_in_sync` (we average by hand
  instead of DistributedDataParallel: R1 and path length need create_graph), `out_of_time` (ranks agree to
  stop), `exit_after_torchrun`.
- Seeds and RNG streams: `default_device`, `seed_rank`, `get_rng_states` / `set_rng_states` /
  `gather_rng_states` (every rank's streams go into a snapshot, so a resumed run draws what it would have).
- Data: `ResumableSampler` + `make_loader` + `infinite_batches` (an epoch's order depends on (seed, epoch)
  only; `position` = {'epoch', 'batches'} says where a run is), `to_float_image`.
- Snapshots and resume: a run folder holds ``<snapshot_prefix><tag>.safetensors`` (networks, faceapp's checkpoint
  format) beside ``<state_prefix><tag>.pt`` (optimisers, counters, RNG: `save_state` / `load_state`, tensors
  only). `save_snapshot` writes the pair, `prune_snapshots` keeps the newest, `find_resume` finds the pair to
  resume from and `restore_progress` is what every loop's resume shares (data position, RNG streams, time).
  `Every` and `Snapshotter` say when a log line or a snapshot is due (by images/steps, by wall time).
- Logs and outputs: `append_stats` (stats.jsonl + a console line), `save_grid`, `count_params`,
  `cosine_warmup`.

Nothing here runs at import time; torch.distributed is only touched with more than one process.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from faceapp.imageio import atomic_path

__all__ = [
    # processes
    "DistInfo", "init_distributed", "run_distributed", "exit_after_torchrun", "reduce_gradients",
    "average_buffers", "broadcast_weights", "check_ranks_in_sync", "out_of_time", "batch_per_rank",
    "rank0_writes",
    # seeds and RNG streams
    "default_device", "seed_rank", "get_rng_states", "set_rng_states", "gather_rng_states",
    # data
    "ResumableSampler", "make_loader", "infinite_batches", "to_float_image",
    # snapshots and resume
    "SNAPSHOT_PREFIX", "STATE_PREFIX", "save_state", "load_state", "save_snapshot", "prune_snapshots",
    "find_resume", "restore_progress", "Every", "Snapshotter",
    # logs and outputs
    "append_stats", "log_stats", "save_grid", "count_params", "cosine_warmup",
]

# A run folder's files (train_generator's names; other scripts pass their own snapshot prefix).
SNAPSHOT_PREFIX = "network-snapshot-"
STATE_PREFIX = "training-state-"


# ---------------------------------------------------------------------------------------------
# Processes.


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a (possibly single-process) run."""

    rank: int
    world_size: int
    device: torch.device


def init_distributed(device: str) -> DistInfo:
    """Join the torchrun process group if WORLD_SIZE > 1 (nccl on CUDA, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistInfo(0, 1, torch.device(device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world_size, dev)


def run_distributed(opts, loop, **kwargs):
    """Join the torchrun group (if any), write options.json on rank 0, run `loop(opts, info, log, **kwargs)`."""
    info = init_distributed(opts.device)
    if info.rank == 0:
        with atomic_path(Path(opts.outdir) / "options.json") as tmp:
            tmp.write_text(json.dumps(dataclasses.asdict(opts), indent=2) + "\n")
    try:
        result = loop(opts, info, log=print if info.rank == 0 else (lambda *a: None), **kwargs)
        if info.world_size > 1:
            dist.barrier()  # nobody tears gloo down while another rank still talks to it (it aborted at exit)
        return result
    finally:
        if info.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def exit_after_torchrun() -> None:
    """Under torchrun, once main() has returned (every rank done and out of the process group), exit without
    running C++ static destructors: gloo's threads sometimes abort the process there ("terminate called
    without an active exception", exit -6) after all work is done and written. No-op in one process."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def batch_per_rank(batch: int, info: DistInfo) -> int:
    """Each process's share of the total --batch (SystemExit unless the process count divides it)."""
    if batch % info.world_size != 0:
        raise SystemExit(f"--batch {batch} must be a multiple of the number of processes ({info.world_size})")
    return batch // info.world_size


def rank0_writes(path: str | os.PathLike, write, wait_s: float = 60.0) -> None:
    """A file every torchrun rank reads (a --cpu-smoke input): rank 0 calls ``write(path)`` unless `path`
    exists; the other ranks wait (up to `wait_s`) for it to appear. Before the process group exists (RANK)."""
    path = Path(path)
    if int(os.environ.get("RANK", "0")) == 0 and not path.exists():
        write(path)
    for _ in range(int(wait_s * 10)):
        if path.exists():
            break
        time.sleep(0.1)


def reduce_gradients(module: torch.nn.Module, world_size: int, sanitize: bool) -> None:
    """Average gradients over ranks in one all_reduce; optionally replace NaN/Inf by finite values.

    We synchronise by hand instead of wrapping modules in DistributedDataParallel: the
    R1 and path-length terms need torch.autograd.grad with create_graph=True, which DDP
    does not support, and each phase trains only half of the networks.
    """
    params = [p for p in module.parameters() if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.flatten() for p in params])
    if world_size > 1:
        dist.all_reduce(flat)
        flat /= world_size
    if sanitize:
        torch.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def average_buffers(module: torch.nn.Module, world_size: int) -> None:
    """BatchNorm statistics differ per rank; keep one copy (their mean), as DDP keeps rank 0's."""
    if world_size == 1:
        return
    for b in module.buffers():
        if b.is_floating_point():
            dist.all_reduce(b)
            b /= world_size


def broadcast_weights(modules: list[torch.nn.Module]) -> None:
    """Rank 0's parameters and buffers everywhere (the same initial weights on every rank)."""
    for module in modules:
        for t in itertools.chain(module.parameters(), module.buffers()):
            dist.broadcast(t.data, src=0)


def check_ranks_in_sync(modules: list[torch.nn.Module], world_size: int) -> None:
    """Raise if the ranks' weights differ (they must: every rank applies the same averaged gradients)."""
    sums = torch.stack([torch.stack([p.detach().double().sum() for p in m.parameters()]).sum() for m in modules])
    gathered = [torch.zeros_like(sums) for _ in range(world_size)]
    dist.all_gather(gathered, sums)
    if not all(torch.equal(g, gathered[0]) for g in gathered):
        raise RuntimeError(f"ranks diverged: weight sums per rank {[g.tolist() for g in gathered]}")


def out_of_time(train_time: float, minutes: float, info: DistInfo, step: int, every: int = 1) -> bool:
    """Whether a --minutes budget (0: none) of training time is spent.

    Ranks' clocks differ: with several processes they agree (one all_reduce) only when `step` is a multiple of
    `every`, and no rank stops in between, so that all stop at the same step.
    """
    if minutes <= 0:
        return False
    spent = train_time >= minutes * 60
    if info.world_size == 1:
        return spent
    if step % every != 0:
        return False
    flag = torch.tensor(float(spent), device=info.device)
    dist.all_reduce(flag)
    return bool(flag > 0)


# ---------------------------------------------------------------------------------------------
# Seeds and RNG streams.


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def seed_rank(seed: int, info: DistInfo) -> None:
    """Seed torch, numpy and python with ``seed * world_size + rank``: each rank draws its own samples."""
    s = seed * info.world_size + info.rank
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


def get_rng_states(device: torch.device) -> dict:
    """RNG states of torch (CPU and this CUDA device), numpy and python, as plain tensors/lists."""
    np_state = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": list(random.getstate()),
    }
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(states: dict, device: torch.device) -> None:
    """Restore what `get_rng_states` returned."""
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


def gather_rng_states(device: torch.device, info: DistInfo) -> list:
    """Every rank's RNG states (a list indexed by rank), so a resumed run continues each rank's streams."""
    rng = get_rng_states(device)
    if info.world_size == 1:
        return [rng]
    gathered = [None] * info.world_size
    dist.all_gather_object(gathered, rng)
    return gathered


# ---------------------------------------------------------------------------------------------
# Data.


class ResumableSampler(torch.utils.data.DistributedSampler):
    """DistributedSampler that can start mid-epoch, so a resumed run sees the same images in order.

    The order of an epoch depends only on (seed, epoch); ``skip`` drops the indices
    this rank already consumed before the snapshot.
    """

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int, weights=None) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.skip = 0
        # weights [len(dataset)]: draw an epoch's indices with replacement in these proportions instead.
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)

    def __iter__(self):
        if self.weights is None:
            return itertools.islice(super().__iter__(), self.skip, None)
        g = torch.Generator().manual_seed(self.seed + self.epoch)  # (seed, epoch) alone fix the order
        idx = torch.multinomial(self.weights, self.total_size, replacement=True, generator=g).tolist()
        return itertools.islice(iter(idx[self.rank:self.total_size:self.num_replicas]), self.skip, None)

    def __len__(self) -> int:
        return self.num_samples - self.skip


def make_loader(dataset, batch_size: int, info: DistInfo, *, seed: int, workers: int,
                weights=None) -> tuple[ResumableSampler, torch.utils.data.DataLoader]:
    """-> (sampler, loader): this rank's share of `dataset` in batches of `batch_size` (whole batches only), in
    an order fixed by (seed, epoch); `weights` [len(dataset)] draw with replacement in those proportions."""
    sampler = ResumableSampler(dataset, num_replicas=info.world_size, rank=info.rank, seed=seed, weights=weights)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=True,
        pin_memory=info.device.type == "cuda", persistent_workers=False,
        generator=torch.Generator(),  # its own RNG, so creating an iterator leaves the global one alone
    )
    return sampler, loader


def infinite_batches(loader: torch.utils.data.DataLoader, sampler: ResumableSampler, position: dict):
    """Yield batches forever; ``position`` ({'epoch', 'batches'}) tracks what was consumed."""
    while True:
        sampler.set_epoch(position["epoch"])
        sampler.skip = position["batches"] * loader.batch_size
        for batch in loader:
            position["batches"] += 1
            yield batch
        position["epoch"] += 1
        position["batches"] = 0


def to_float_image(img: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 [N, C, H, W] in 0..255 -> float32 [N, C, H, W] in [-1, 1]."""
    return img.to(device, non_blocking=True).to(torch.float32) / 127.5 - 1


# ---------------------------------------------------------------------------------------------
# Snapshots and resume.


def save_state(path: str | os.PathLike, state: dict) -> None:
    """torch.save `state` (tensors, state dicts, numbers) to `path` atomically (a killed run leaves the old one)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: str | os.PathLike) -> dict | None:
    """The state saved at `path` (tensors only: weights_only, no code runs), or None when there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def save_snapshot(outdir: str | os.PathLike, tag: str, nets: dict, state: dict, *, extra: dict | None = None,
                  dtype: torch.dtype | None = None, snapshot_prefix: str = SNAPSHOT_PREFIX,
                  state_prefix: str = STATE_PREFIX) -> Path:
    """Write ``<state_prefix><tag>.pt`` (`state`), then ``<snapshot_prefix><tag>.safetensors`` (`nets`, `extra` in
    its header, float32 tensors stored as `dtype`) in `outdir`; returns the snapshot's path.

    The state goes first, so that every snapshot `find_resume` sees has its state beside it.
    """
    from faceapp.stylegan.checkpoint import save_networks

    outdir = Path(outdir)
    save_state(outdir / f"{state_prefix}{tag}.pt", state)
    snap = outdir / f"{snapshot_prefix}{tag}.safetensors"
    save_networks(snap, nets, extra=extra, dtype=dtype)
    return snap


def prune_snapshots(outdir: Path, keep: int, snapshot_prefix: str = SNAPSHOT_PREFIX,
                    state_prefix: str = STATE_PREFIX) -> None:
    """Delete all but the newest ``keep`` snapshot/state pairs (sample grids stay)."""
    snaps = sorted(Path(outdir).glob(f"{snapshot_prefix}*.safetensors"))
    for snap in snaps[:-keep]:
        snap.unlink(missing_ok=True)
        snap.with_name(snap.name.replace(snapshot_prefix, state_prefix)).with_suffix(".pt").unlink(missing_ok=True)


def find_resume(path: str | os.PathLike, snapshot_prefix: str = SNAPSHOT_PREFIX,
                state_prefix: str = STATE_PREFIX) -> tuple[Path, Path]:
    """Snapshot file or run folder (its latest snapshot) -> (network snapshot, training-state file beside it)."""
    p = Path(path)
    if p.is_dir():
        snaps = sorted(p.glob(f"{snapshot_prefix}*.safetensors"))
        if not snaps:
            raise SystemExit(f"--resume {path}: no {snapshot_prefix}*.safetensors in that folder")
        p = snaps[-1]
    if not p.exists():
        raise SystemExit(f"--resume {path}: no such file")
    state = p.with_name(p.name.replace(snapshot_prefix, state_prefix)).with_suffix(".pt")
    if not state.exists():
        raise SystemExit(f"--resume {path}: the training state {state.name} is missing beside it")
    return p, state


def restore_progress(state: dict, info: DistInfo, position: dict, log=print) -> float:
    """What every loop's resume shares: the data `position` (updated in place) and this rank's RNG streams from
    a training `state`; returns the training time spent so far (s). A run resumed with another number of
    processes goes on with fresh streams (said on rank 0)."""
    position.update(state["data_position"])
    rng = state["rng"]
    if len(rng) == info.world_size:
        set_rng_states(rng[info.rank], info.device)
    elif info.rank == 0:
        log(f"resuming with {info.world_size} processes from a run with {len(rng)}: RNG streams differ")
    return float(state.get("train_time_s", 0.0))


class Every:
    """Says when a counter (images or steps seen) has reached the next multiple of `n` after `start`.

        snap_due = Every(snap_nimg, cur_nimg)
        if snap_due(cur_nimg, force=done): ...   # then due again at the next multiple
    """

    def __init__(self, n: int, start: int = 0):
        self.n = max(int(n), 1)
        self.next = (start // self.n + 1) * self.n

    def __call__(self, count: int, force: bool = False) -> bool:
        if count >= self.next or force:
            self.next = (count // self.n + 1) * self.n
            return True
        return False


class Snapshotter:
    """Says when `every_minutes` of wall time have passed since the last snapshot."""

    def __init__(self, every_minutes: float):
        self.every = float(every_minutes) * 60
        self.last = time.time()

    def due(self) -> bool:
        if time.time() - self.last >= self.every:
            self.last = time.time()
            return True
        return False

    def after_step(self, save, spent_s: float, minutes: float) -> bool:
        """Call `save()` when a snapshot is due; True when a `minutes` budget (0: none) is spent (stop)."""
        if self.due():
            save()
        if minutes and spent_s > minutes * 60:
            print(f"--minutes {minutes} reached")
            return True
        return False


# ---------------------------------------------------------------------------------------------
# Logs and outputs.


def append_stats(path: str | os.PathLike, record: dict, log=print) -> None:
    """One JSON line for `record` at the end of `path` (stats.jsonl), and the same as ``k=v`` on the console."""
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")
    log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))


def log_stats(path: str | os.PathLike, record: dict, info: DistInfo, log=print) -> None:
    """A log interval's `record`, with the peak GPU memory (``gpu_mem_gb``) on CUDA, appended by rank 0
    (append_stats)."""
    if info.device.type == "cuda":
        record["gpu_mem_gb"] = torch.cuda.max_memory_allocated(info.device) / 2**30
    if info.rank == 0:
        append_stats(path, record, log)


def save_grid(images: torch.Tensor, path: Path, nrow: int) -> None:
    """images [N, C, H, W] in [-1, 1] -> a PNG grid with ``nrow`` images per row."""
    import torchvision.utils

    with atomic_path(path) as tmp:
        torchvision.utils.save_image(images.clamp(-1, 1), tmp, nrow=nrow, normalize=True, value_range=(-1, 1),
                                     padding=0)


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def cosine_warmup(step: int, total: int, warmup: int = 100) -> float:
    """Learning-rate factor: linear warm-up over `warmup` steps, then a cosine from 1 to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))
