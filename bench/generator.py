"""Benchmark the StyleGAN2 generator: img/s, ms/img, analytic GFLOPs and achieved GFLOP/s.

    python -m bench.generator                      # config-f 1024 and the small demo 128, batch 1 and 8
    python -m bench.generator --preset demo128 --batch 1 --iters 20
    python -m bench.generator --resolution 128 --channel-base 4096 --channel-max 256 \
        --w-dim 256 --map-layers 4 --batch 1        # size a custom network
    python -m bench.generator --device cuda        # GPU, custom ops: impl ref vs cuda
    python -m bench.generator --nvidia ~/src/stylegan2-ada-pytorch --threads 1
                                                   # side by side with NVIDIA's Generator

Weights are random (speed does not depend on them). Timing covers G(z) = mapping +
synthesis with noise_mode='const' under torch.inference_mode, after warm-up.

With --nvidia PATH (a stylegan2-ada-pytorch checkout), each CPU case also builds NVIDIA's
training.networks.Generator, loads our state dict into it (strict), checks that both give the
same image, and times the two alternately in this process; vs_nv is our median process CPU
time over NVIDIA's (the figure that is robust to other load), vs_nv_wall the same for wall
time. NVIDIA's runs use force_fp32=True: without it its fp16 blocks run in fp16 on the CPU,
which is many times slower and not what anyone would deploy.
GFLOPs are counted analytically from the config: 2 x the multiply-adds of every fc,
conv, weight (de)modulation and FIR filter as this implementation executes them
(the up=2 conv is a stride-2 transposed conv on the low-res grid, then a 4x4 FIR);
torch.utils.flop_counter agrees to within 0.1% (it skips the elementwise modulation).

cpu_ms/img is process CPU time (all threads): on a shared machine it is the better guide.
On a loaded 2-core box use --threads 1: two OpenMP threads fighting other processes for
two cores spin-wait and run several times slower.
"""

from __future__ import annotations

import argparse
import ctypes
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

from faceapp.stylegan import Generator

PRESETS = {
    # Official FFHQ config-f (stylegan2-ada-pytorch 'paper1024' / the NVIDIA ffhq.pkl).
    "configf1024": dict(z_dim=512, w_dim=512, img_resolution=1024, map_layers=8, channel_base=32768,
                        channel_max=512, num_fp16_res=4, conv_clamp=256),
    # Our demo generator: channels 256 at 4-32 px, 128 at 64 px, 64 at 128 px.
    "demo128": dict(z_dim=256, w_dim=256, img_resolution=128, map_layers=4, channel_base=8192,
                    channel_max=256, num_fp16_res=0, conv_clamp=256),
    # The 64 px demo config being trained (channels 256 at 4-8 px, then 128, 64, 32).
    "demo64": dict(z_dim=256, w_dim=256, img_resolution=64, map_layers=4, channel_base=2048,
                   channel_max=256, num_fp16_res=0, conv_clamp=None),
}


def tune_malloc() -> bool:
    """Make glibc keep freed memory instead of handing big blocks back to the OS.

    By default every tensor above the mmap threshold is a fresh mmap whose pages are
    zero-faulted on first touch and unmapped on free, once per layer: on this 2-core machine
    that was ~25% of the CPU time of a 128 px render (and more at 1024 px). Process-wide, so
    it is for entry points (bench, app, CLI) to call, never a library at import.
    Returns False where it does not apply (not glibc).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4
    return bool(libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 1 << 30)
                and libc.mallopt(m_top_pad, 64 << 20))


def count_macs(img_resolution: int, w_dim: int, z_dim: int, map_layers: int, channel_base: int,
               channel_max: int, img_channels: int = 3, kernel: int = 3, fir_taps: int = 4) -> dict[str, int]:
    """Multiply-adds per image of mapping and synthesis, counted from the architecture.

    Returns {'mapping': ..., 'synthesis': ..., 'total': ...}.
    """
    mapping = z_dim * w_dim + (map_layers - 1) * w_dim * w_dim
    ch = {2**i: min(channel_base // 2**i, channel_max) for i in range(2, int(math.log2(img_resolution)) + 1)}
    k2, fir = kernel * kernel, fir_taps * fir_taps

    def layer(cin, cout, res, up):
        macs = w_dim * cin  # affine -> styles
        # Per-sample weights (fused path) and demodulation: ||W||^2 per (o, i), then a [1, I] x [I, O] matmul.
        macs += 2 * cout * cin * k2 + cout * cin
        if up == 1:
            macs += cout * cin * k2 * res * res
        else:  # transposed conv on the input grid, then the FIR at the output resolution
            macs += cout * cin * k2 * (res // up) ** 2 + cout * fir * res * res
        return macs

    def torgb(cin, res):
        return w_dim * cin + img_channels * cin + img_channels * cin * res * res

    synthesis = layer(ch[4], ch[4], 4, 1) + torgb(ch[4], 4)
    for res in list(ch)[1:]:
        synthesis += layer(ch[res // 2], ch[res], res, 2) + layer(ch[res], ch[res], res, 1) + torgb(ch[res], res)
        synthesis += img_channels * fir * res * res  # upsample2d of the skip image
    return {"mapping": mapping, "synthesis": synthesis, "total": mapping + synthesis}


def build(cfg: dict, device: torch.device) -> Generator:
    G = Generator(
        z_dim=cfg["z_dim"], c_dim=0, w_dim=cfg["w_dim"], img_resolution=cfg["img_resolution"], img_channels=3,
        mapping_kwargs=dict(num_layers=cfg["map_layers"]),
        synthesis_kwargs=dict(channel_base=cfg["channel_base"], channel_max=cfg["channel_max"],
                              num_fp16_res=cfg["num_fp16_res"], conv_clamp=cfg["conv_clamp"]),
    )
    with torch.no_grad():  # visible noise, as in a trained network
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.1)
    return G.eval().requires_grad_(False).to(device)


def time_generators(nets: list, batch: int, device: torch.device, iters: int, warmup: int,
                    max_seconds: float) -> list[tuple[float, float, int]]:
    """Median wall seconds and median process CPU seconds per batch for each generator in
    `nets` (called as G(z, None, **kwargs) for (G, kwargs) pairs), timed alternately, up to
    `iters` runs each (stopping early after max_seconds), and the number of runs.

    CPU seconds count every thread of this process; with one thread they approximate the wall
    time on an otherwise idle core even when other processes share the machine. Alternating
    the generators exposes them to the same background load."""
    gen = torch.Generator(device=device).manual_seed(0)
    z = torch.randn([batch, nets[0][0].z_dim], device=device, generator=gen)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times = [([], []) for _ in nets]
    with torch.inference_mode():
        for G, kwargs in nets:
            for _ in range(warmup):
                G(z, None, noise_mode="const", **kwargs)
        sync()
        start = time.perf_counter()
        while len(times[0][0]) < iters:
            for (G, kwargs), (wall, cpu) in zip(nets, times):
                t0, c0 = time.perf_counter(), time.process_time()
                G(z, None, noise_mode="const", **kwargs)
                sync()
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            if time.perf_counter() - start > max_seconds:
                break
    # Medians: robust to the odd slow run when other processes share the CPU.
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    return [(med(wall), med(cpu), len(wall)) for wall, cpu in times]


def import_nvidia_networks(path: str):
    """NVIDIA's training/networks.py from a stylegan2-ada-pytorch checkout at `path`.

    Its top-level packages (training, torch_utils, dnnlib) stay imported under those names
    (its persistence module re-imports them), so this script must not import our own
    `training` package afterwards. dnnlib imports `requests` only for downloads: a stand-in
    module does when it is not installed."""
    import importlib
    import types

    root = Path(path).expanduser().resolve()
    if not (root / "training" / "networks.py").is_file():
        raise SystemExit(f"--nvidia {path}: no training/networks.py there; pass a stylegan2-ada-pytorch checkout")
    for k in [k for k in sys.modules if k.split(".")[0] in ("training", "torch_utils", "dnnlib")]:
        del sys.modules[k]
    if importlib.util.find_spec("requests") is None:
        sys.modules.setdefault("requests", types.ModuleType("requests"))
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module("training.networks")
    finally:
        sys.path.remove(str(root))


def build_nvidia(nv_networks, G: Generator) -> torch.nn.Module:
    """NVIDIA's Generator with G's kwargs and weights (strict load: same layout, key for key)."""
    kw = G.init_kwargs
    N = nv_networks.Generator(z_dim=kw["z_dim"], c_dim=kw["c_dim"], w_dim=kw["w_dim"],
                              img_resolution=kw["img_resolution"], img_channels=kw["img_channels"],
                              mapping_kwargs=kw["mapping_kwargs"], synthesis_kwargs=kw["synthesis_kwargs"])
    N.load_state_dict(G.state_dict(), strict=True)
    return N.eval().requires_grad_(False).to(next(G.parameters()).device)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), action="append",
                   help="preset(s) to run (default: all, unless --resolution is given)")
    p.add_argument("--resolution", type=int, help="custom config: output resolution")
    p.add_argument("--channel-base", type=int, default=8192, help="custom config: channel_base")
    p.add_argument("--channel-max", type=int, default=256, help="custom config: channel_max")
    p.add_argument("--w-dim", type=int, default=256, help="custom config: z_dim = w_dim")
    p.add_argument("--map-layers", type=int, default=4, help="custom config: mapping layers")
    p.add_argument("--num-fp16-res", type=int, default=0, help="custom config: fp16 resolutions (CUDA only)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes")
    p.add_argument("--iters", type=int, default=10, help="timed iterations (at most)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up iterations")
    p.add_argument("--max-seconds", type=float, default=30.0, help="stop timing a case after this long")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    p.add_argument("--device", choices=["cpu", "cuda", "all"], default="all",
                   help="'all' = CPU, plus CUDA (impl ref and cuda) when a GPU is present")
    p.add_argument("--cpu-max-res", type=int, default=1024,
                   help="skip CPU runs above this resolution (config-f 1024 takes seconds per image)")
    p.add_argument("--no-tune-malloc", action="store_true", help="leave glibc malloc at its defaults")
    p.add_argument("--nvidia", metavar="PATH",
                   help="a stylegan2-ada-pytorch checkout: time NVIDIA's Generator beside ours (CPU)")
    args = p.parse_args(argv)
    nv_networks = import_nvidia_networks(args.nvidia) if args.nvidia else None

    torch.set_num_threads(args.threads)
    tuned = False if args.no_tune_malloc else tune_malloc()
    configs = {}
    if args.resolution:
        configs["custom"] = dict(z_dim=args.w_dim, w_dim=args.w_dim, img_resolution=args.resolution,
                                 map_layers=args.map_layers, channel_base=args.channel_base,
                                 channel_max=args.channel_max, num_fp16_res=args.num_fp16_res, conv_clamp=256)
    for name in args.preset or ([] if args.resolution else list(PRESETS)):
        configs[name] = PRESETS[name]

    runs = []  # (device, impl)
    if args.device in ("cpu", "all"):
        runs.append(("cpu", "ref"))
    if args.device == "cuda" or (args.device == "all" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            p.error("--device cuda but torch sees no CUDA GPU")
        runs += [("cuda", "ref"), ("cuda", "cuda")]

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} of {os.cpu_count()} CPU threads, load average {load:.2f}, "
          f"malloc tuned: {tuned}"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    print(f"{'config':<12} {'res':>5} {'params':>8} {'GFLOP/img':>10} {'device':<6} {'impl':<6} {'batch':>5} "
          f"{'ms/img':>9} {'img/s':>8} {'GFLOP/s':>8} {'cpu_ms/img':>10} {'iters':>5}"
          + (f" {'vs_nv':>6} {'vs_nv_wall':>10} {'max|diff|':>9}" if nv_networks else ""))
    for name, cfg in configs.items():
        macs = count_macs(cfg["img_resolution"], cfg["w_dim"], cfg["z_dim"], cfg["map_layers"],
                          cfg["channel_base"], cfg["channel_max"])
        gflop = 2 * macs["total"] / 1e9
        for dev_name, impl in runs:
            if dev_name == "cpu" and cfg["img_resolution"] > args.cpu_max_res:
                continue
            os.environ["FACEAPP_CUDA_OPS"] = impl if dev_name == "cuda" else "auto"
            device = torch.device(dev_name)
            G = build(cfg, device)
            n_params = sum(q.numel() for q in G.parameters())
            nets = [(G, {})]
            if nv_networks is not None and dev_name == "cpu":
                nets.append((build_nvidia(nv_networks, G), dict(force_fp32=True)))
            for batch in args.batch:
                diff = None
                if len(nets) > 1:
                    z = torch.randn([batch, G.z_dim], device=device, generator=torch.Generator(device).manual_seed(1))
                    with torch.inference_mode():
                        ours, theirs = (net(z, None, noise_mode="const", **kw) for net, kw in nets)
                    diff = (ours - theirs).abs().max().item()
                results = time_generators(nets, batch, device, args.iters, args.warmup, args.max_seconds)
                for (sec, cpu_sec, n), label in zip(results, [impl, "nv"]):
                    ms_img = 1000 * sec / batch
                    line = (f"{name:<12} {cfg['img_resolution']:>5} {n_params / 1e6:>7.2f}M {gflop:>10.2f} "
                            f"{dev_name:<6} {label:<6} {batch:>5} {ms_img:>9.1f} {batch / sec:>8.2f} "
                            f"{gflop * batch / sec:>8.1f} {1000 * cpu_sec / batch:>10.1f} {n:>5}")
                    if diff is not None and label != "nv":
                        line += (f" {cpu_sec / results[1][1]:>6.3f} {sec / results[1][0]:>10.3f} {diff:>9.1e}")
                    print(line, flush=True)
            del G, nets


if __name__ == "__main__":
    main()
