"""Import the official e4e checkpoint (`e4e_ffhq_encode.pt`) without executing code from it.

The file is a torch.save of the encoder4editing training coach's dict:

    {'state_dict': {'encoder.<Encoder4Editing keys>': ..., 'decoder.<rosinality Generator keys>': ...},
     'latent_avg': [18, 512] (or [512] / [1, 512]),
     'opts': vars(argparse options) (encoder_type 'Encoder4Editing', stylegan_size 1024, dataset_type, ...),
     optionally 'discriminator_state_dict' (its latent discriminator; not needed for inference)}

It is read with torch.load(weights_only=True), allowing only argparse.Namespace beyond plain
containers and tensors (some forks store opts as a Namespace), by faceapp.stylegan.safe_load's
`load_torch_weights` (the reader of rosinality .pt files too). The encoder keys load strictly into
`Encoder4Editing` (its configuration read off the weights' shapes); the decoder goes through
`convert_rosinality_generator` (the same path as rosinality .pt files) with latent_avg as w_avg.

This module imports faceapp.inversion.encoder; the encoder module never imports this one.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

import torch

from faceapp.errors import CheckpointError
from faceapp.inversion.encoder import Encoder4Editing, register_encoder_class
from faceapp.stylegan.checkpoint import build_network, load_state_checked
from faceapp.stylegan.converters import convert_rosinality_generator, estimate_w_avg, fill_missing_buffers
from faceapp.stylegan.safe_load import checkpoint_file, load_torch_weights

__all__ = ["import_e4e_checkpoint", "read_e4e_checkpoint", "encoder_kwargs_from_state"]


def read_e4e_checkpoint(path: str | os.PathLike) -> dict:
    """The raw dict of an e4e .pt file, read with weights_only=True (+ argparse.Namespace)."""
    where = checkpoint_file(path, "an e4e .pt checkpoint file")
    ckpt = load_torch_weights(where, what="an e4e weights file")
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), Mapping):
        raise CheckpointError(f"{where} is not an e4e checkpoint (expected a dict with a 'state_dict')")
    return ckpt


def _opts_dict(ckpt: dict) -> dict:
    opts = ckpt.get("opts")
    if isinstance(opts, argparse.Namespace):
        opts = vars(opts)
    return dict(opts) if isinstance(opts, Mapping) else {}


def _tensor(sd: Mapping, key: str, where: str) -> torch.Tensor:
    t = sd.get(key)
    if not isinstance(t, torch.Tensor):
        raise CheckpointError(f"{where}: the encoder weights have no tensor {key!r}; not an e4e Encoder4Editing")
    return t


def encoder_kwargs_from_state(sd: Mapping[str, torch.Tensor], where: str = "e4e encoder") -> dict:
    """Encoder4Editing kwargs that reproduce the shapes of an encoder state dict (keys without 'encoder.')."""
    num_ws = 0
    while f"styles.{num_ws}.linear.weight" in sd:
        num_ws += 1
    n_units = 0
    while f"body.{n_units}.res_layer.1.weight" in sd:
        n_units += 1
    if num_ws == 0 or n_units == 0 or "input_layer.0.weight" not in sd:
        raise CheckpointError(f"{where}: not an Encoder4Editing state dict (no input_layer / body / styles keys)")
    stem = _tensor(sd, "input_layer.0.weight", where)  # [C0, img_channels, 3, 3]
    depths = [int(_tensor(sd, f"body.{i}.res_layer.1.weight", where).shape[0]) for i in range(n_units)]
    # Stages are runs of equal width; a stage's first unit opens with the previous width.
    blocks, channels = [], []
    for d in depths:
        if channels and channels[-1] == d:
            blocks[-1] += 1
        else:
            channels.append(d)
            blocks.append(1)
    if len(channels) != 4:
        raise CheckpointError(f"{where}: the body has {len(channels)} stages of widths {channels}; "
                              "Encoder4Editing has 4")
    linear = _tensor(sd, "styles.0.linear.weight", where)  # [w_dim, head_channels]
    n_convs = 0
    while f"styles.0.convs.{2 * n_convs}.weight" in sd:
        n_convs += 1
    unit = "ir_se" if "body.0.res_layer.5.fc1.weight" in sd else "ir"
    se_reduction = 16
    if unit == "ir_se":
        # The widest stage pins the reduction down best (max(c // r, 1) clamps narrow ones at 1).
        hidden = int(_tensor(sd, f"body.{n_units - 1}.res_layer.5.fc1.weight", where).shape[0])
        se_reduction = max(channels[3] // max(hidden, 1), 1)
    # The coarse heads read c3 = R/16 and have log2(R/16) stride-2 convs.
    img_resolution = 16 * 2**n_convs
    # Which head reads which pyramid level, from the heads' conv counts (3 and 7 in e4e).
    counts = []
    for i in range(num_ws):
        k = 0
        while f"styles.{i}.convs.{2 * k}.weight" in sd:
            k += 1
        counts.append(k)
    coarse_ind = next((i for i, k in enumerate(counts) if k > n_convs), num_ws)
    middle_ind = next((i for i, k in enumerate(counts) if k > n_convs + 1), num_ws)
    # Heads that were never reached keep e4e's defaults (their weights still load by shape).
    coarse_ind, middle_ind = (3, 7) if coarse_ind == num_ws else (coarse_ind, max(middle_ind, coarse_ind))
    return dict(
        num_ws=num_ws, w_dim=int(linear.shape[0]), img_resolution=img_resolution, img_channels=int(stem.shape[1]),
        blocks=blocks, channels=channels, head_channels=int(linear.shape[1]), unit=unit,
        se_reduction=se_reduction, coarse_ind=coarse_ind, middle_ind=middle_ind,
    )


def _latent_avg(ckpt: dict, opts: dict, num_ws: int, w_dim: int, where: str) -> torch.Tensor:
    """latent_avg as [num_ws, w_dim], or None when the file has none."""
    avg = ckpt.get("latent_avg")
    if avg is None:
        if opts.get("start_from_latent_avg", True):
            raise CheckpointError(f"{where} has no latent_avg, which its encoder adds to every code")
        return None
    if not isinstance(avg, torch.Tensor) or avg.shape[-1] != w_dim or avg.numel() not in (w_dim, num_ws * w_dim):
        shape = list(avg.shape) if isinstance(avg, torch.Tensor) else type(avg).__name__
        raise CheckpointError(f"{where}: latent_avg is {shape}; expected [{num_ws}, {w_dim}] or [{w_dim}]")
    return avg.detach().to(torch.float32).reshape(-1, w_dim).expand(num_ws, w_dim).clone()


def import_e4e_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu"):
    """Read an official e4e checkpoint as (Encoder4Editing, Generator), both in eval mode on `device`.

    The encoder returns full W+ codes (latent_avg included); the generator is the StyleGAN2 the
    encoder was trained against (rosinality layout converted to ours, mapping.w_avg = latent_avg).
    """
    where = os.fspath(path)
    ckpt = read_e4e_checkpoint(where)
    opts = _opts_dict(ckpt)
    kind = opts.get("encoder_type", "Encoder4Editing")
    if kind != "Encoder4Editing":
        raise CheckpointError(f"{where} holds a {kind!r} encoder; faceapp imports e4e's Encoder4Editing only")
    sd = ckpt["state_dict"]
    enc = {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}
    dec = {k[len("decoder."):]: v for k, v in sd.items() if k.startswith("decoder.")}
    if not enc:
        raise CheckpointError(f"{where} has no encoder weights ('encoder.*' keys)")
    if not dec:
        raise CheckpointError(f"{where} has no decoder weights ('decoder.*' keys)")
    if not all(isinstance(v, torch.Tensor) for v in (*enc.values(), *dec.values())):
        raise CheckpointError(f"{where}: the state_dict holds something other than tensors")

    kwargs = encoder_kwargs_from_state(enc, where=f"{where} [encoder]")
    register_encoder_class()
    E = build_network("Encoder4Editing", kwargs, where=f"{where} [encoder]")
    assert isinstance(E, Encoder4Editing)
    latent_avg = _latent_avg(ckpt, opts, E.num_ws, E.w_dim, where)
    # e4e adds latent_avg to the codes only when trained with start_from_latent_avg (its default).
    adds_avg = latent_avg is not None and opts.get("start_from_latent_avg", True) is not False
    w_avg = latent_avg if adds_avg else torch.zeros([E.num_ws, E.w_dim])
    load_state_checked(E, {**enc, "w_avg": w_avg}, where=f"{where} [encoder]")

    g_kwargs, g_state = convert_rosinality_generator(
        dec, latent_avg=None if latent_avg is None else latent_avg[0], where=f"{where} [decoder]")
    G = build_network(g_kwargs.pop("_class"), g_kwargs, where=f"{where} [decoder]")
    fill_missing_buffers(G, g_state)  # fixed resample filters are not stored in rosinality's layout
    if latent_avg is None:  # the generator still needs a w_avg (truncation, projection start)
        g_state["mapping.w_avg"] = estimate_w_avg(G, g_state, where=f"{where} [decoder]")
    load_state_checked(G, g_state, where=f"{where} [decoder]")

    size = opts.get("stylegan_size")
    if isinstance(size, int) and size != G.img_resolution:
        raise CheckpointError(f"{where}: opts.stylegan_size is {size} but the decoder weights are {G.img_resolution}px")
    if G.num_ws != E.num_ws or G.w_dim != E.w_dim:
        raise CheckpointError(
            f"{where}: the encoder predicts {E.num_ws} codes of {E.w_dim} but the decoder takes {G.num_ws} of {G.w_dim}"
        )
    return E.to(device).eval(), G.to(device).eval()
