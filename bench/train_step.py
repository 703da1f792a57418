"""Where the time of one training step goes, for a recipe of training/train_generator.py.

    python -m bench.train_step --recipe fast --resolution 64 --threads 2
    python -m bench.train_step --recipe ada --resolution 64 --threads 2 --cbase 2048 --cmax 256 --z-dim 256

Times each part of the G and D phases separately (median of --iters after warm-up), on random weights
and random images (speed does not depend on them): data loading (from --data if given), G forward,
augmentation, D (for the projected D: frozen features, projection, heads), backward, optimiser steps,
and the regularisers of the ada recipe. Prints ms per image of each part and the s/kimg they add up to.

--memory-format both (default) runs it with the frozen MobileNetV2 in the old contiguous layout and in
channels_last (what training uses now) and prints the two s/kimg side by side; --part detail times a step
of the detail stage (training/train_detail.py: DetailNet forward/backward + the MobileNetV2 perceptual loss)
and --part perceptual the perceptual loss alone (the encoder's and projector's dominant cost).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from training.loss import map_with_mixing
from training.train_generator import (
    build_augment,
    build_discriminator,
    build_generator,
    build_loss,
    build_parser,
    resolve_options,
)


def timed(fn, iters: int) -> float:
    """Median seconds of fn() over ``iters`` calls, after one warm-up call."""
    fn()
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def _set_format(fmt: str) -> None:
    import faceapp.inversion.losses as losses
    import training.projected as projected

    projected.CHANNELS_LAST = losses.CHANNELS_LAST = fmt == "channels_last"


def detail_step(batch: int, iters: int, in_res: int = 64) -> float:
    """Seconds of one detail-stage training step (forward, L1 + perceptual, backward, Adam)."""
    from faceapp.inversion.losses import perceptual_loss
    from faceapp.stylegan.detail import DetailNet

    net = DetailNet(in_resolution=in_res).train()
    percep = perceptual_loss("mobilenet").eval()
    opt = torch.optim.Adam(net.parameters(), 1e-4)
    x, y = torch.rand(batch, 3, in_res, in_res) * 2 - 1, torch.rand(batch, 3, 2 * in_res, 2 * in_res) * 2 - 1

    def step():
        fake = net(x)
        with torch.no_grad():
            fy = percep.features(y)
        loss = (fake - y).abs().mean() + percep.distance(percep.features(fake), fy).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return timed(step, iters)


def perceptual_step(batch: int, iters: int, res: int = 128) -> float:
    """Seconds of the perceptual loss forward + backward to the image (batch at res px)."""
    from faceapp.inversion.losses import perceptual_loss

    percep = perceptual_loss("mobilenet").eval()
    a, b = torch.rand(batch, 3, res, res) * 2 - 1, torch.rand(batch, 3, res, res) * 2 - 1
    a.requires_grad_(True)

    def step():
        percep(a, b).sum().backward()

    return timed(step, iters)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--memory-format", default="both", choices=["both", "contiguous", "channels_last"])
    p.add_argument("--part", default="generator", choices=["generator", "detail", "perceptual"])
    p.add_argument("--batch", type=int, default=16, help="with --part detail / perceptual")
    a, rest = p.parse_known_args(argv)
    torch.set_num_threads(int(dict(zip(rest[::2], rest[1::2])).get("--threads", 2)))
    formats = ["contiguous", "channels_last"] if a.memory_format == "both" else [a.memory_format]
    totals = {}
    for fmt in formats:
        _set_format(fmt)
        print(f"== frozen MobileNetV2 in {fmt} memory format")
        if a.part == "generator":
            totals[fmt] = generator_step(rest)
        else:
            iters = 5
            t = detail_step(a.batch, iters) if a.part == "detail" else perceptual_step(a.batch, iters)
            totals[fmt] = t / a.batch * 1000
            print(f"{a.part} step, batch {a.batch}: {t * 1e3:.1f} ms -> {totals[fmt]:.1f} s/kimg")
    if len(totals) == 2:
        before, after = totals["contiguous"], totals["channels_last"]
        print(f"{a.part}: {before:.1f} s/kimg before (contiguous), {after:.1f} s/kimg after (channels_last): "
              f"{before / after:.2f}x")


def generator_step(argv: list[str] | None = None) -> float:
    """Time one step of a train_generator recipe by its parts; prints the table, returns s/kimg."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="fast", choices=["fast", "ada"])
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--data", default=None, help="a training archive, to time data loading too")
    a, extra = p.parse_known_args(argv)  # the rest are train_generator options, e.g. --batch 16
    torch.set_num_threads(a.threads)
    args = build_parser().parse_args(["--recipe", a.recipe, "--outdir", "unused", *extra])
    opts = resolve_options(args, a.resolution)
    res, B = a.resolution, opts.batch
    G = build_generator(opts, res, 3, 0).train().requires_grad_(False)
    D = build_discriminator(opts, res, 3, 0).train().requires_grad_(False)
    aug = build_augment(opts)
    loss = build_loss(opts, G, D, aug, None)
    z = torch.randn(B, G.z_dim)
    c = torch.zeros(B, 0)  # unconditional
    real = torch.rand(B, 3, res, res) * 2 - 1
    augment = aug if aug is not None else (lambda x: x)
    n_G = sum(p.numel() for p in G.parameters())
    n_D = sum(p.numel() for p in D.parameters())
    print(f"recipe {a.recipe}, {res} px, batch {B}, {a.threads} threads; G {n_G / 1e6:.2f} M params, "
          f"D {n_D / 1e6:.2f} M trainable ({type(D).__name__})")

    rows: list[tuple[str, float]] = []  # (part, seconds per step)

    def add(name, fn):
        rows.append((name, timed(fn, a.iters)))

    if a.data:
        from training.dataset import ImageArchive

        loader = torch.utils.data.DataLoader(ImageArchive(a.data, xflip=opts.mirror), batch_size=B, shuffle=True,
                                             num_workers=0, drop_last=True)
        it = iter(loader)
        add("data: read + decode a batch (in-process)", lambda: next(it))

    with torch.no_grad():
        img = G(z, None)
    add("G forward, no grad (D phase)", lambda: torch.no_grad()(lambda: G.synthesis(map_with_mixing(
        G, z, None, opts.style_mixing), noise_mode="random"))())
    add("augment (one batch)", lambda: augment(real))
    projected = hasattr(D, "project")
    if projected:
        add("D: frozen MobileNetV2 + projection, forward (one batch)", lambda: torch.no_grad()(D.project)(real))
        feats = [f.detach() for f in D.project(real)]
        add("D: heads forward (one batch)", lambda: torch.no_grad()(
            lambda: [h(f) for h, f in zip(D.heads, feats)])())
    else:
        add("D forward, no grad (one batch)", lambda: torch.no_grad()(D)(real, None))

    def main_phase(phase: str, module: torch.nn.Module):
        """The loss phase `phase` (Dmain, Gmain) with fresh gradients on `module` (D, G) only."""
        def run():
            module.requires_grad_(True)
            for p_ in module.parameters():
                p_.grad = None
            loss.accumulate_gradients(phase, real, c, z, c, gain=1.0)
            module.requires_grad_(False)
        return run

    add("D phase, whole (G fwd + 2x aug + 2x D fwd + backward)", main_phase("Dmain", D))
    add("G phase, whole (G fwd + aug + D fwd + backward through D and G)", main_phase("Gmain", G))

    def g_forward_grad():
        G.requires_grad_(True)
        G(z, None, noise_mode="random").sum().backward()
        G.requires_grad_(False)

    add("  of which G forward + backward alone", g_forward_grad)
    reg_total = 0.0
    for phase, net, interval in loss.phases():
        if interval > 1:
            module = G if net == "G" else D

            def reg(phase=phase, module=module, interval=interval):
                module.requires_grad_(True)
                loss.accumulate_gradients(phase, real, c, z, c, gain=float(interval))
                module.requires_grad_(False)

            t = timed(reg, a.iters)
            rows.append((f"{phase} (every {interval} steps; per step)", t / interval))
            reg_total += t / interval
    opt_G = torch.optim.Adam(G.parameters(), lr=1e-4)
    opt_D = torch.optim.Adam(D.parameters(), lr=1e-4)
    for p_ in list(G.parameters()) + list(D.parameters()):
        p_.grad = torch.zeros_like(p_)
    add("Adam steps (G and D)", lambda: (opt_G.step(), opt_D.step()))

    step = {name: t for name, t in rows}
    total = (step["D phase, whole (G fwd + 2x aug + 2x D fwd + backward)"]
             + step["G phase, whole (G fwd + aug + D fwd + backward through D and G)"]
             + reg_total + step["Adam steps (G and D)"] + step.get("data: read + decode a batch (in-process)", 0))
    print(f"{'part':66s} {'ms/step':>9s} {'ms/img':>8s} {'share':>6s}")
    for name, t in rows:
        print(f"{name:66s} {t * 1e3:9.1f} {t * 1e3 / B:8.2f} {t / total:6.0%}")
    print(f"{'total step':66s} {total * 1e3:9.1f} {total * 1e3 / B:8.2f}   -> {total / B * 1000:.1f} s/kimg")
    del img
    return total / B * 1000


if __name__ == "__main__":
    main()
