"""Small training runtime shared by the newer training scripts: resumable state files and timed snapshots."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

__all__ = ["load_state", "save_state", "Snapshotter", "cosine_warmup"]


def save_state(path: str | os.PathLike, state: dict) -> None:
    """torch.save `state` (tensors, state dicts, numbers) to `path` atomically (a killed run leaves the old one)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_state(path: str | os.PathLike) -> dict | None:
    """The state saved at `path` (tensors only: weights_only, no code runs), or None when there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


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


def cosine_warmup(step: int, total: int, warmup: int = 100) -> float:
    """Learning-rate factor: linear warm-up over `warmup` steps, then a cosine from 1 to 0 at `total`."""
    import math

    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))
