"""A naive, independent StyleGAN2 forward in rosinality's naming and conventions (test reference).

Written from the published architecture, not from faceapp's networks: it reads a rosinality
stylegan2-pytorch state dict (keys like "convs.3.conv.modulation.weight") and computes
mapping, synthesis and discriminator outputs one sample at a time with plain torch ops, so
importers can be checked against numbers that share no code with faceapp.stylegan.

Conventions reproduced here (rosinality model.py):
  EqualLinear     y = x @ (W * lr_mul / sqrt(in)).T + b * lr_mul
  EqualConv2d     conv2d(x, W / sqrt(in * k * k))
  FusedLeakyReLU  leaky_relu(x + b, 0.2) * sqrt(2)
  ModulatedConv2d weight [1, O, I, k, k] * 1/sqrt(I k k) * style; demodulate per output channel;
                  upsampling = conv_transpose2d(stride 2) then blur (kernel * 4, pad (1, 1))
  ToRGB           1x1 modulated conv without demodulation + bias, skip upsampled with
                  upfirdn2d(up=2, pad (2, 1), kernel * 4)
  noises          noises.noise_i [1, 1, r, r], r = 2 ** ((i + 5) // 2), added as x + w * noise
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SQRT2 = math.sqrt(2)
BLUR = [1, 3, 3, 1]


def make_kernel(k=BLUR) -> torch.Tensor:
    """2-D low-pass kernel [n, n] summing to 1 (outer product of the 1-D taps)."""
    k = torch.tensor(k, dtype=torch.float32)
    k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad=(0, 0)) -> torch.Tensor:
    """Zero-insertion upsample, pad (before, after) on both axes, true 2-D convolution, subsample."""
    n, c, h, w = x.shape
    if up > 1:
        y = x.new_zeros([n, c, h * up, w * up])
        y[:, :, ::up, ::up] = x
        x = y
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    k = torch.flip(kernel, [0, 1])[None, None]  # convolution = correlation with the flipped kernel
    x = F.conv2d(x.reshape(n * c, 1, *x.shape[2:]), k).reshape(n, c, x.shape[2] - k.shape[2] + 1, -1)
    return x[:, :, ::down, ::down]


def fused_lrelu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    shape = [1, -1] + [1] * (x.ndim - 2)
    return F.leaky_relu(x + bias.reshape(shape), 0.2) * SQRT2


def equal_linear(x, sd, prefix, lr_mul=1.0, activate=False):
    weight, bias = sd[prefix + ".weight"], sd[prefix + ".bias"]
    y = x @ (weight * (lr_mul / math.sqrt(weight.shape[1]))).t()
    if activate:
        return fused_lrelu(y, bias * lr_mul)
    return y + bias * lr_mul


# ---------------------------------------------------------------------------------------------
# Generator.


def mapping(sd, z, lr_mul=0.01):
    """z [N, style_dim] -> w [N, style_dim]: PixelNorm, then n_mlp EqualLinear + fused lrelu."""
    x = z * torch.rsqrt((z * z).mean(dim=1, keepdim=True) + 1e-8)
    i = 1
    while f"style.{i}.weight" in sd:
        x = equal_linear(x, sd, f"style.{i}", lr_mul=lr_mul, activate=True)
        i += 1
    return x


def modulated_conv(x, sd, prefix, w, demodulate=True, upsample=False):
    """Per-sample modulated convolution, one sample at a time (no grouped-conv tricks)."""
    weight = sd[prefix + ".weight"][0]  # [O, I, k, k]
    o, i, k, _ = weight.shape
    styles = equal_linear(w, sd, prefix + ".modulation")  # [N, I]
    outs = []
    for n in range(x.shape[0]):
        wn = weight / math.sqrt(i * k * k) * styles[n].reshape(1, i, 1, 1)
        if demodulate:
            wn = wn * torch.rsqrt((wn * wn).sum(dim=[1, 2, 3]) + 1e-8).reshape(o, 1, 1, 1)
        xn = x[n : n + 1]
        if upsample:
            y = F.conv_transpose2d(xn, wn.transpose(0, 1), stride=2, padding=0)
            y = upfirdn2d(y, make_kernel() * 4, pad=(1, 1))
        else:
            y = F.conv2d(xn, wn, padding=k // 2)
        outs.append(y)
    return torch.cat(outs)


def styled_conv(x, sd, prefix, w, noise, upsample=False):
    x = modulated_conv(x, sd, prefix + ".conv", w, upsample=upsample)
    x = x + sd[prefix + ".noise.weight"] * noise
    return fused_lrelu(x, sd[prefix + ".activate.bias"])


def to_rgb(x, sd, prefix, w, skip=None):
    y = modulated_conv(x, sd, prefix + ".conv", w, demodulate=False) + sd[prefix + ".bias"]
    if skip is not None:
        y = y + upfirdn2d(skip, make_kernel() * 4, up=2, pad=(2, 1))
    return y


def synthesis(sd, latent, noises=None):
    """latent [N, n_latent, style_dim] -> image [N, 3, size, size], with the stored noises by default."""
    n_rgb = 0
    while f"to_rgbs.{n_rgb}.conv.weight" in sd:
        n_rgb += 1
    if noises is None:
        noises = [sd[f"noises.noise_{i}"] for i in range(2 * n_rgb + 1)]
    x = sd["input.input"].repeat(latent.shape[0], 1, 1, 1)
    x = styled_conv(x, sd, "conv1", latent[:, 0], noises[0])
    skip = to_rgb(x, sd, "to_rgb1", latent[:, 1])
    i = 1
    for j in range(n_rgb):
        x = styled_conv(x, sd, f"convs.{2 * j}", latent[:, i], noises[2 * j + 1], upsample=True)
        x = styled_conv(x, sd, f"convs.{2 * j + 1}", latent[:, i + 1], noises[2 * j + 2])
        skip = to_rgb(x, sd, f"to_rgbs.{j}", latent[:, i + 2], skip)
        i += 2
    return skip


# ---------------------------------------------------------------------------------------------
# Discriminator.


def conv_layer(x, sd, prefix, downsample=False, activate=True):
    """rosinality ConvLayer: [Blur] EqualConv2d [FusedLeakyReLU]; keys shift by one with the blur."""
    idx = 1 if downsample else 0
    weight = sd[f"{prefix}.{idx}.weight"]
    k = weight.shape[-1]
    weight = weight / math.sqrt(weight.shape[1] * k * k)
    if downsample:
        p = (len(BLUR) - 2) + (k - 1)
        x = upfirdn2d(x, make_kernel(), pad=((p + 1) // 2, p // 2))
        x = F.conv2d(x, weight, stride=2)
    else:
        x = F.conv2d(x, weight, padding=k // 2)
    if activate:
        x = fused_lrelu(x, sd[f"{prefix}.{idx + 1}.bias"])
    return x


def discriminator(sd, img, group=4):
    """img [N, 3, size, size] -> logits [N, 1] (residual rosinality Discriminator)."""
    x = conv_layer(img, sd, "convs.0")
    k = 1
    while f"convs.{k}.conv1.0.weight" in sd:
        y = conv_layer(conv_layer(x, sd, f"convs.{k}.conv1"), sd, f"convs.{k}.conv2", downsample=True)
        s = conv_layer(x, sd, f"convs.{k}.skip", downsample=True, activate=False)
        x = (y + s) / SQRT2
        k += 1
    n, c, h, w = x.shape
    g = min(n, group)
    std = x.reshape(g, -1, 1, c, h, w)
    std = torch.sqrt(std.var(0, unbiased=False) + 1e-8).mean([2, 3, 4], keepdim=True).squeeze(2)
    x = torch.cat([x, std.repeat(g, 1, h, w)], dim=1)
    x = conv_layer(x, sd, "final_conv")
    x = equal_linear(x.reshape(n, -1), sd, "final_linear.0", activate=True)
    return equal_linear(x, sd, "final_linear.1")


# ---------------------------------------------------------------------------------------------
# Random weights in rosinality's layout.


def random_generator_state(size=16, style_dim=8, n_mlp=2, channels=None, lr_mlp=0.01, seed=0):
    """A rosinality Generator state dict with random (but sane-scale) weights."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0, offset=0.0):
        return torch.randn(*shape, generator=g) * scale + offset

    channels = channels or {4: 16, 8: 16, 16: 8, 32: 8}
    log_size = int(math.log2(size))
    sd = {}
    for i in range(1, n_mlp + 1):
        sd[f"style.{i}.weight"] = rnd(style_dim, style_dim, scale=1 / lr_mlp)
        sd[f"style.{i}.bias"] = rnd(style_dim, scale=0.1 / lr_mlp)
    c4 = channels[4]
    sd["input.input"] = rnd(1, c4, 4, 4)

    def add_styled(prefix, cin, cout, up):
        sd[f"{prefix}.conv.weight"] = rnd(1, cout, cin, 3, 3)
        sd[f"{prefix}.conv.modulation.weight"] = rnd(cin, style_dim)
        sd[f"{prefix}.conv.modulation.bias"] = rnd(cin, scale=0.2, offset=1.0)
        if up:
            sd[f"{prefix}.conv.blur.kernel"] = make_kernel() * 4
        sd[f"{prefix}.noise.weight"] = rnd(1, scale=0.5)
        sd[f"{prefix}.activate.bias"] = rnd(cout, scale=0.2)

    def add_rgb(prefix, cin, up):
        if up:
            sd[f"{prefix}.upsample.kernel"] = make_kernel() * 4
        sd[f"{prefix}.conv.weight"] = rnd(1, 3, cin, 1, 1)
        sd[f"{prefix}.conv.modulation.weight"] = rnd(cin, style_dim)
        sd[f"{prefix}.conv.modulation.bias"] = rnd(cin, scale=0.2, offset=1.0)
        sd[f"{prefix}.bias"] = rnd(1, 3, 1, 1, scale=0.2)

    add_styled("conv1", c4, c4, False)
    add_rgb("to_rgb1", c4, False)
    cin = c4
    for j, lg in enumerate(range(3, log_size + 1)):
        cout = channels[2**lg]
        add_styled(f"convs.{2 * j}", cin, cout, True)
        add_styled(f"convs.{2 * j + 1}", cout, cout, False)
        add_rgb(f"to_rgbs.{j}", cout, True)
        cin = cout
    for i in range((log_size - 2) * 2 + 1):
        r = 2 ** ((i + 5) // 2)
        sd[f"noises.noise_{i}"] = rnd(1, 1, r, r)
    return sd


def random_discriminator_state(size=16, channels=None, seed=1):
    """A rosinality (residual) Discriminator state dict with random weights."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    channels = channels or {4: 16, 8: 16, 16: 8, 32: 8}
    sd = {"convs.0.0.weight": rnd(channels[size], 3, 1, 1), "convs.0.1.bias": rnd(channels[size], scale=0.2)}
    k = 1
    res = size
    while res > 4:
        cin, cout = channels[res], channels[res // 2]
        sd[f"convs.{k}.conv1.0.weight"] = rnd(cin, cin, 3, 3)
        sd[f"convs.{k}.conv1.1.bias"] = rnd(cin, scale=0.2)
        sd[f"convs.{k}.conv2.0.kernel"] = make_kernel()
        sd[f"convs.{k}.conv2.1.weight"] = rnd(cout, cin, 3, 3)
        sd[f"convs.{k}.conv2.2.bias"] = rnd(cout, scale=0.2)
        sd[f"convs.{k}.skip.0.kernel"] = make_kernel()
        sd[f"convs.{k}.skip.1.weight"] = rnd(cout, cin, 1, 1)
        k += 1
        res //= 2
    c4 = channels[4]
    sd["final_conv.0.weight"] = rnd(c4, c4 + 1, 3, 3)
    sd["final_conv.1.bias"] = rnd(c4, scale=0.2)
    sd["final_linear.0.weight"] = rnd(c4, c4 * 16)
    sd["final_linear.0.bias"] = rnd(c4, scale=0.2)
    sd["final_linear.1.weight"] = rnd(1, c4)
    sd["final_linear.1.bias"] = rnd(1, scale=0.2)
    return sd
