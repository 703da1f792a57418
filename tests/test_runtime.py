"""training/runtime.py (what the training scripts share) and training/options.py (their generated command lines).

Tiny and CPU-only: the loops that use these are exercised end to end in test_training.py, test_encoder.py and
test_fast_recipe.py (straight runs against resumed ones, bit for bit).
"""

from __future__ import annotations

import argparse
import ast
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from training import runtime
from training.options import AUTO, add_options, given_options, layered_values, opt

REPO = Path(__file__).resolve().parents[1]
ONE = runtime.DistInfo(rank=0, world_size=1, device=torch.device("cpu"))


# ---------------------------------------------------------------------------------------------
# Snapshots and resume.


class Tiny(torch.nn.Linear):
    def __init__(self, n: int = 3):
        super().__init__(n, n)
        self.init_kwargs = {"n": n}


@pytest.fixture
def tiny_class(monkeypatch):
    from faceapp.stylegan import checkpoint

    monkeypatch.setitem(checkpoint.NETWORK_CLASSES, "Tiny", Tiny)  # registered for this test only
    return Tiny


def test_snapshots_are_found_newest_first_pruned_in_pairs_and_load_back(tmp_path, tiny_class):
    from faceapp.stylegan.checkpoint import load_networks, read_header

    net = tiny_class()
    for step in (5, 10, 20):
        snap = runtime.save_snapshot(tmp_path, f"{step:07d}", {"net": net}, {"step": step}, extra={"step": step})
        assert snap == tmp_path / f"network-snapshot-{step:07d}.safetensors"
    snap, state = runtime.find_resume(tmp_path)
    assert (snap.name, state.name) == ("network-snapshot-0000020.safetensors", "training-state-0000020.pt")
    assert runtime.load_state(state) == {"step": 20} and read_header(snap)["extra"] == {"step": 20}
    assert torch.equal(load_networks(snap)["net"].weight, net.weight)
    assert runtime.find_resume(tmp_path / "network-snapshot-0000005.safetensors")[1].name == "training-state-0000005.pt"

    runtime.prune_snapshots(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "network-snapshot-0000010.safetensors", "network-snapshot-0000020.safetensors",
        "training-state-0000010.pt", "training-state-0000020.pt"]

    # Another script's names (train_encoder's); a snapshot whose state is missing is refused, not half-resumed.
    runtime.save_snapshot(tmp_path / "enc", "0000003", {"net": net}, {"step": 3}, snapshot_prefix="encoder-snapshot-")
    assert runtime.find_resume(tmp_path / "enc", "encoder-snapshot-")[0].name == "encoder-snapshot-0000003.safetensors"
    with pytest.raises(SystemExit, match="no encoder-snapshot-"):
        runtime.find_resume(tmp_path, "encoder-snapshot-")
    (tmp_path / "training-state-0000020.pt").unlink()
    with pytest.raises(SystemExit, match="training-state-0000020.pt is missing"):
        runtime.find_resume(tmp_path)
    assert runtime.load_state(tmp_path / "training-state-0000020.pt") is None


def test_every_fires_as_the_modulo_schedule_it_replaced_from_any_resume_point():
    for n, start in [(4, 0), (4, 6), (4, 8), (1, 3), (3, 0)]:
        every = runtime.Every(n, start)
        fired = [step for step in range(start + 1, 30) if every(step)]
        assert fired == [step for step in range(start + 1, 30) if step % n == 0], (n, start)
    every = runtime.Every(8, 0)  # counted in images: a batch of 3 passes 8 at 9, 16 at 18, ...
    assert [nimg for nimg in range(3, 30, 3) if every(nimg)] == [9, 18, 24]
    every = runtime.Every(100, 0)
    assert every(7, force=True) and every.next == 100 and not every(99)


def test_rng_streams_and_data_position_resume_where_they_left_off(tmp_path):
    dataset = torch.utils.data.TensorDataset(torch.arange(10))
    sampler, loader = runtime.make_loader(dataset, 3, ONE, seed=1, workers=0)
    position = {"epoch": 0, "batches": 0}
    batches = runtime.infinite_batches(loader, sampler, position)
    runtime.seed_rank(7, ONE)
    for _ in range(4):  # into the second epoch (3 whole batches per epoch)
        next(batches)
    state = {"data_position": dict(position), "rng": runtime.gather_rng_states(ONE.device, ONE), "train_time_s": 12.5}
    expected = [next(batches)[0].tolist() for _ in range(4)]
    draws = (torch.rand(3), np.random.rand(3), random.random())

    runtime.seed_rank(0, ONE)  # a fresh process
    sampler2, loader2 = runtime.make_loader(dataset, 3, ONE, seed=1, workers=0)
    position2 = {"epoch": 0, "batches": 0}
    logged = []
    assert runtime.restore_progress(state, ONE, position2, logged.append) == 12.5
    assert position2 == {"epoch": 1, "batches": 1} and not logged
    batches2 = runtime.infinite_batches(loader2, sampler2, position2)
    assert [next(batches2)[0].tolist() for _ in range(4)] == expected
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(draws[0], again[0]) and np.array_equal(draws[1], again[1]) and draws[2] == again[2]

    two = {**state, "rng": state["rng"] * 2}  # a run made with 2 processes goes on with fresh streams, said so
    runtime.restore_progress(two, ONE, {"epoch": 0, "batches": 0}, logged.append)
    assert logged == ["resuming with 1 processes from a run with 2: RNG streams differ"]


def test_out_of_time_in_one_process():
    assert not runtime.out_of_time(1e9, 0.0, ONE, step=1)  # no budget
    assert runtime.out_of_time(60.0, 1.0, ONE, step=3, every=16)  # one process needs no agreement
    assert not runtime.out_of_time(59.9, 1.0, ONE, step=16)


def test_batch_per_rank_splits_the_batch_or_refuses_what_does_not_divide():
    four = runtime.DistInfo(rank=1, world_size=4, device=torch.device("cpu"))
    assert runtime.batch_per_rank(32, ONE) == 32 and runtime.batch_per_rank(32, four) == 8
    with pytest.raises(SystemExit, match=r"--batch 6 must be a multiple of the number of processes \(4\)"):
        runtime.batch_per_rank(6, four)


def test_log_stats_appends_on_rank_0_only(tmp_path):
    path, logged = tmp_path / "stats.jsonl", []
    runtime.log_stats(path, {"step": 1, "loss": 0.5}, ONE, logged.append)
    other = runtime.DistInfo(rank=1, world_size=2, device=torch.device("cpu"))
    runtime.log_stats(path, {"step": 1, "loss": 0.25}, other, logged.append)
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"step": 1, "loss": 0.5}]
    assert logged == ["step=1 loss=0.5"]  # no gpu_mem_gb off CUDA


def test_rank0_writes_the_file_once_and_the_other_ranks_wait_for_it(tmp_path, monkeypatch):
    path, calls = tmp_path / "smoke.bin", []

    def write(p):
        calls.append(p)
        p.write_bytes(b"x")

    monkeypatch.setenv("RANK", "1")  # another rank: it does not write, and gives up waiting after wait_s
    runtime.rank0_writes(path, write, wait_s=0.2)
    assert calls == [] and not path.exists()
    monkeypatch.setenv("RANK", "0")
    runtime.rank0_writes(str(path), write)
    runtime.rank0_writes(path, write)  # already there: not written again
    assert calls == [path] and path.read_bytes() == b"x"


# ---------------------------------------------------------------------------------------------
# Generated command lines.


@dataclass(frozen=True)
class Opts:
    outdir: str = opt(None, "run folder", required=True)
    device: str = opt(AUTO, "device (default: auto)")
    layers: int = opt(2, "depth")
    lr: float = opt(0.5, "learning rate")
    blocks: tuple[int, ...] = opt((3, 4), "units per stage")
    width: int | None = opt(None, "width (default: w_dim)")
    mirror: bool = opt(False, "mirror")
    kind: str = opt("a", "kind", choices=["a", "b"])


def test_the_command_line_is_generated_from_the_dataclass_and_layers_resolve_in_order():
    p = add_options(argparse.ArgumentParser(), Opts)
    args = p.parse_args(["--outdir", "x", "--lr", "0.25", "--blocks", "1,2,3", "--no-mirror", "--width", "7"])
    assert (args.outdir, args.lr, args.blocks, args.mirror, args.width) == ("x", 0.25, (1, 2, 3), False, 7)
    assert args.layers is None and args.device is None  # not given
    assert given_options(args, Opts) == {"outdir": "x", "lr": 0.25, "blocks": (1, 2, 3), "mirror": False, "width": 7}
    helps = {a.dest: a.help for a in p._actions}
    assert helps["layers"] == "depth [2]" and helps["blocks"] == "units per stage [3,4]"
    assert helps["device"] == "device (default: auto)" and helps["mirror"] == "mirror"  # None / False: not shown
    with pytest.raises(SystemExit):
        p.parse_args(["--outdir", "x", "--kind", "c"])
    with pytest.raises(SystemExit):
        p.parse_args(["--outdir", "x", "--blocks", "1,two"])
    with pytest.raises(SystemExit):
        p.parse_args([])  # --outdir is required

    # defaults < each layer in turn < what was given
    values = layered_values(Opts, args, {"layers": 5, "lr": 9.0, "kind": "b"}, {"layers": 6})
    assert values == {"outdir": "x", "device": None, "layers": 6, "lr": 0.25, "blocks": (1, 2, 3), "width": 7,
                      "mirror": False, "kind": "b"}
    Opts(**values)


def test_a_field_without_help_is_refused():
    @dataclass(frozen=True)
    class Bad:
        n: int = 1

    with pytest.raises(TypeError, match="opt"):
        add_options(argparse.ArgumentParser(), Bad)


def test_scripts_run_as_modules_without_editing_sys_path():
    """`python -m training.X` / `python -m bench.X` from the repository root: no module-level sys.path edits."""
    offenders = []
    for path in sorted([*(REPO / "training").glob("*.py"), *(REPO / "bench").glob("*.py")]):
        rel = path.relative_to(REPO).as_posix()
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        for node in (n for t in top for n in ast.walk(t)):
            if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys":
                offenders.append(rel)
                break
    assert not offenders, sorted(set(offenders))
    assert (REPO / "bench" / "__init__.py").is_file()
