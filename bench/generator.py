"""Benchmark the StyleGAN2 generator: img/s, ms/img, analytic GFLOPs and achieved GFLOP/s.

    python bench/generator.py                      # config-f 1024 and the small demo 128, batch 1 and 8
    python bench/generator.py --preset demo128 --batch 1 --iters 20
    python bench/generator.py --resolution 128 --channel-base 4096 --channel-max 256 \
        --w-dim 256 --map-layers 4 --batch 1        # size a custom network
    python bench/generator.py --device cuda        # GPU, custom ops: impl ref vs cuda

Weights are random (speed does not depend on them). Timing covers G(z) = mapping +
synthesis with noise_mode='const' under torch.inference_mode, after warm-up.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faceapp.stylegan import Generator  # noqa: E402

PRESETS = {
    # Official FFHQ config-f (stylegan2-ada-pytorch 'paper1024' / the NVIDIA ffhq.pkl).
    "configf1024": dict(z_dim=512, w_dim=512, img_resolution=1024, map_layers=8, channel_base=32768,
                        channel_max=512, num_fp16_res=4, conv_clamp=256),
    # Our demo generator: one 128 px image in ~125-140 ms of CPU time on ONE core of the 2-core
    # dev machine (EPYC, malloc tuned), i.e. <= 150 ms even single-threaded; channels 256 at
    # 4-32 px, 128 at 64 px, 64 at 128 px.
    "demo128": dict(z_dim=256, w_dim=256, img_resolution=128, map_layers=4, channel_base=8192,
                    channel_max=256, num_fp16_res=0, conv_clamp=256),
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


def time_generator(G: Generator, batch: int, device: torch.device, iters: int, warmup: int,
                   max_seconds: float) -> tuple[float, float, int]:
    """Median wall seconds and median process CPU seconds per batch over up to `iters` timed runs
    (stopping early after max_seconds), and the number of runs.

    CPU seconds count every thread of this process; with one thread they approximate the wall
    time on an otherwise idle core even when other processes share the machine."""
    gen = torch.Generator(device=device).manual_seed(0)
    z = torch.randn([batch, G.z_dim], device=device, generator=gen)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with torch.inference_mode():
        for _ in range(warmup):
            G(z, None, noise_mode="const")
        sync()
        times, cpu_times = [], []
        start = time.perf_counter()
        while len(times) < iters:
            t0, c0 = time.perf_counter(), time.process_time()
            G(z, None, noise_mode="const")
            sync()
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
            if time.perf_counter() - start > max_seconds:
                break
    # Medians: robust to the odd slow run when other processes share the CPU.
    return sorted(times)[len(times) // 2], sorted(cpu_times)[len(cpu_times) // 2], len(times)


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
    args = p.parse_args(argv)

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
    print(f"{'config':<12} {'res':>5} {'params':>8} {'GFLOP/img':>10} {'device':<6} {'impl':<5} {'batch':>5} "
          f"{'ms/img':>9} {'img/s':>8} {'GFLOP/s':>8} {'cpu_ms/img':>10} {'iters':>5}")
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
            for batch in args.batch:
                sec, cpu_sec, n = time_generator(G, batch, device, args.iters, args.warmup, args.max_seconds)
                ms_img = 1000 * sec / batch
                print(f"{name:<12} {cfg['img_resolution']:>5} {n_params / 1e6:>7.2f}M {gflop:>10.2f} "
                      f"{dev_name:<6} {impl:<5} {batch:>5} {ms_img:>9.1f} {batch / sec:>8.2f} "
                      f"{gflop * batch / sec:>8.1f} {1000 * cpu_sec / batch:>10.1f} {n:>5}", flush=True)
            del G


if __name__ == "__main__":
    main()
