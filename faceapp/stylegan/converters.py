"""Converters from the official StyleGAN2 layouts onto our networks' (tensors renamed and reshaped only).

* NVIDIA stylegan2-ada-pytorch: our networks use NVIDIA's names, so a pickled network's parameters and
  buffers (`nvidia_state_dict`) load into ours as they are, built from its constructor kwargs
  (`nvidia_init_kwargs`).
* rosinality stylegan2-pytorch: `convert_rosinality_generator` / `convert_rosinality_discriminator` rename
  a state dict onto NVIDIA's layout; `fill_missing_buffers` and `estimate_w_avg` supply what rosinality does
  not store (resample filters, the average w).

faceapp.stylegan.legacy (the importers) and faceapp.inversion.e4e_import (e4e's decoder) use these.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import torch

from faceapp.errors import CheckpointError
from faceapp.stylegan.checkpoint import load_state_checked, network_class
from faceapp.stylegan.safe_load import PersistentObject

__all__ = [
    "plain",
    "nvidia_state_dict",
    "nvidia_init_kwargs",
    "fill_missing_buffers",
    "estimate_w_avg",
    "convert_rosinality_generator",
    "convert_rosinality_discriminator",
]


# ---------------------------------------------------------------------------------------------
# NVIDIA networks (read by faceapp.stylegan.safe_load.load_network_pickle).


def plain(value):
    """EasyDicts -> dicts, tuples -> lists, numpy scalars -> Python numbers (JSON-safe kwargs)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, torch.Tensor) and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


def _collect_tensors(obj: PersistentObject, prefix: str, out: dict[str, torch.Tensor]) -> None:
    state = obj.state
    skip = state.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers", "_modules"):
        if not isinstance(state.get(group) or {}, dict):
            raise CheckpointError(f"malformed network in the pickle: {prefix or '<top>'} {group} is not a dict")
    for group in ("_parameters", "_buffers"):
        for key, value in (state.get(group) or {}).items():
            if value is None or (group == "_buffers" and key in skip):
                continue
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(f"malformed network in the pickle: {prefix}{key} is not a tensor")
            out[prefix + key] = value
    for key, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentObject):
            raise CheckpointError(f"malformed network in the pickle: submodule {prefix}{key} is not a module")
        _collect_tensors(child, f"{prefix}{key}.", out)


def nvidia_init_kwargs(obj: PersistentObject, where: str) -> dict:
    """The constructor kwargs of a pickled NVIDIA network (positional arguments bound to their names)."""
    state = obj.state
    kwargs = state.get("_init_kwargs", state.get("init_kwargs"))
    args = state.get("_init_args", ())
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{where}: the pickled {obj.class_name} records no constructor kwargs")
    kwargs = plain(kwargs)
    if args:
        try:
            bound = inspect.signature(network_class(obj.class_name)).bind_partial(*plain(list(args)), **kwargs)
        except TypeError as e:
            raise CheckpointError(f"{where}: cannot match the pickled constructor arguments ({e})") from e
        kwargs = dict(bound.arguments)
    return kwargs


def nvidia_state_dict(obj: PersistentObject) -> dict[str, torch.Tensor]:
    """The parameters and persistent buffers of a pickled NVIDIA network, by state_dict key."""
    out: dict[str, torch.Tensor] = {}
    _collect_tensors(obj, "", out)
    return out


# ---------------------------------------------------------------------------------------------
# rosinality networks.


def fill_missing_buffers(net: torch.nn.Module, state: dict) -> None:
    """Fixed buffers rosinality does not store in our layout (resample filters): into `state`, from `net`."""
    for key, value in net.state_dict().items():
        if key.endswith("resample_filter") and key not in state:
            state[key] = value.clone()


@torch.no_grad()
def estimate_w_avg(G: torch.nn.Module, state: dict, where: str, n: int = 10000) -> torch.Tensor:
    """The average w [w_dim] of `n` seeded random z through G's mapping loaded with `state`.

    rosinality training checkpoints carry no average w; truncation needs one. Fixed seed: same file,
    same w_avg.
    """
    state = dict(state)
    state["mapping.w_avg"] = torch.zeros_like(G.mapping.w_avg)
    load_state_checked(G, state, where=where)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn([n, G.z_dim], generator=gen)  # [n, z_dim]
    return G.mapping(z, None)[:, 0].mean(dim=0)  # [w_dim]


def _get(sd: Mapping[str, torch.Tensor], key: str, where: str) -> torch.Tensor:
    value = sd.get(key)
    if not isinstance(value, torch.Tensor):
        raise CheckpointError(f"{where}: the state dict has no tensor {key!r}; not a rosinality StyleGAN2 checkpoint")
    return value.detach().to(torch.float32)


def _fit_channels(channels: dict[int, int], where: str) -> tuple[int, int]:
    """channel_base, channel_max with min(channel_base // r, channel_max) == channels[r] for every r."""
    cmax = max(channels.values())
    below = [r * c for r, c in channels.items() if c < cmax]
    base = min(below) if below else cmax * max(channels)
    if all(min(base // r, cmax) == c for r, c in channels.items()):
        return base, cmax
    raise CheckpointError(
        f"{where}: channel counts {dict(sorted(channels.items()))} do not follow StyleGAN2's "
        "min(channel_base // resolution, channel_max) rule; faceapp cannot represent this network"
    )


def _resample_filter(sd: Mapping[str, torch.Tensor], key: str, gain: float, where: str) -> list[float]:
    """The 1-D filter behind a rosinality 2-D blur kernel (k2d = outer(f, f) / sum^2 * gain)."""
    k = sd.get(key)
    if not isinstance(k, torch.Tensor):
        return [1, 3, 3, 1]
    k = k.detach().double() / gain
    f = k.sum(dim=0)  # [n]; the 2-D kernel is separable, so its column sums are the 1-D filter
    if not torch.allclose(torch.outer(f, f), k, atol=1e-6):
        raise CheckpointError(f"{where}: {key} is not a separable blur kernel")
    default = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64) / 8
    if f.shape == default.shape and torch.allclose(f, default, atol=1e-6):
        return [1, 3, 3, 1]
    return [round(v, 8) for v in f.tolist()]


def convert_rosinality_generator(
    sd: Mapping[str, torch.Tensor],
    latent_avg: torch.Tensor | None = None,
    lr_mlp: float = 0.01,
    where: str = "rosinality generator",
) -> tuple[dict, dict[str, torch.Tensor]]:
    """Rename a rosinality Generator state dict onto our Generator: (init_kwargs, state_dict).

    The two codebases compute the same function from the same stored numbers:
    EqualLinear (weight * lr_mul / sqrt(in), bias * lr_mul) == FullyConnectedLayer;
    ModulatedConv2d's 1/sqrt(fan_in) cancels in demodulation, as NVIDIA's absent one does, and
    for toRGB both scale styles by 1/sqrt(in); rosinality's upsampling conv_transpose2d with a
    stored (already flipped) kernel + blur(pad 1, 1, gain 4) is NVIDIA's up=2 path with the same
    kernel; FusedLeakyReLU == lrelu(x + b) * sqrt(2). So tensors are only renamed/reshaped:
    conv.weight [1,O,I,k,k] -> [O,I,k,k], noise.weight [1] -> [], noises.noise_i [1,1,r,r] -> [r,r],
    to_rgb bias [1,3,1,1] -> [3], input.input [1,C,4,4] -> [C,4,4], latent_avg -> mapping.w_avg.
    The returned state has no resample_filter buffers and, without latent_avg, no mapping.w_avg.
    init_kwargs carries the class under '_class'.
    """
    n_mlp = 0
    while f"style.{n_mlp + 1}.weight" in sd:
        n_mlp += 1
    if n_mlp == 0 or "input.input" not in sd:
        raise CheckpointError(f"{where}: not a rosinality StyleGAN2 generator (no style.1.weight / input.input)")
    n_rgb = 0
    while f"to_rgbs.{n_rgb}.conv.weight" in sd:
        n_rgb += 1
    log_size = n_rgb + 2
    size = 2**log_size

    z_dim = _get(sd, "style.1.weight", where).shape[1]
    w_dim = _get(sd, f"style.{n_mlp}.weight", where).shape[0]
    hidden = _get(sd, "style.1.weight", where).shape[0]
    const = _get(sd, "input.input", where)  # [1, C, 4, 4]
    channels = {4: const.shape[1]}
    for i in range(n_rgb):
        channels[2 ** (i + 3)] = _get(sd, f"convs.{2 * i}.conv.weight", where).shape[1]
    channel_base, channel_max = _fit_channels(channels, where)
    img_channels = _get(sd, "to_rgb1.conv.weight", where).shape[1]
    resample_filter = (_resample_filter(sd, "convs.0.conv.blur.kernel", 4.0, where) if n_rgb
                       else [1, 3, 3, 1])

    synthesis_kwargs: dict = dict(channel_base=channel_base, channel_max=channel_max)
    if resample_filter != [1, 3, 3, 1]:
        synthesis_kwargs["resample_filter"] = resample_filter
    mapping_kwargs: dict = dict(num_layers=n_mlp, lr_multiplier=lr_mlp)
    if hidden != w_dim:
        mapping_kwargs["layer_features"] = hidden
    kwargs = dict(_class="Generator", z_dim=int(z_dim), c_dim=0, w_dim=int(w_dim), img_resolution=size,
                  img_channels=int(img_channels), mapping_kwargs=mapping_kwargs,
                  synthesis_kwargs=synthesis_kwargs)

    out: dict[str, torch.Tensor] = {}
    for i in range(n_mlp):
        out[f"mapping.fc{i}.weight"] = _get(sd, f"style.{i + 1}.weight", where)
        out[f"mapping.fc{i}.bias"] = _get(sd, f"style.{i + 1}.bias", where)
    if latent_avg is not None:
        out["mapping.w_avg"] = latent_avg.detach().to(torch.float32).reshape(-1)

    def noise(index: int, res: int) -> torch.Tensor:
        key = f"noises.noise_{index}"
        if key in sd:
            return _get(sd, key, where).reshape(res, res)
        # Early rosinality checkpoints had no stored noise: fixed, seeded stand-in for noise_mode='const'.
        return torch.randn([res, res], generator=torch.Generator().manual_seed(index))

    def styled_conv(src: str, dst: str, noise_index: int, res: int) -> None:
        out[f"{dst}.weight"] = _get(sd, f"{src}.conv.weight", where)[0]
        out[f"{dst}.affine.weight"] = _get(sd, f"{src}.conv.modulation.weight", where)
        out[f"{dst}.affine.bias"] = _get(sd, f"{src}.conv.modulation.bias", where)
        out[f"{dst}.noise_strength"] = _get(sd, f"{src}.noise.weight", where).reshape([])
        bias_key = f"{src}.activate.bias" if f"{src}.activate.bias" in sd else f"{src}.bias"
        out[f"{dst}.bias"] = _get(sd, bias_key, where).reshape(-1)
        out[f"{dst}.noise_const"] = noise(noise_index, res)

    def to_rgb(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = _get(sd, f"{src}.conv.weight", where)[0]
        out[f"{dst}.affine.weight"] = _get(sd, f"{src}.conv.modulation.weight", where)
        out[f"{dst}.affine.bias"] = _get(sd, f"{src}.conv.modulation.bias", where)
        out[f"{dst}.bias"] = _get(sd, f"{src}.bias", where).reshape(-1)

    out["synthesis.b4.const"] = const[0]
    styled_conv("conv1", "synthesis.b4.conv1", 0, 4)
    to_rgb("to_rgb1", "synthesis.b4.torgb")
    for i in range(n_rgb):
        res = 2 ** (i + 3)
        styled_conv(f"convs.{2 * i}", f"synthesis.b{res}.conv0", 2 * i + 1, res)
        styled_conv(f"convs.{2 * i + 1}", f"synthesis.b{res}.conv1", 2 * i + 2, res)
        to_rgb(f"to_rgbs.{i}", f"synthesis.b{res}.torgb")
    return kwargs, out


def convert_rosinality_discriminator(
    sd: Mapping[str, torch.Tensor], where: str = "rosinality discriminator"
) -> tuple[dict, dict[str, torch.Tensor]]:
    """Rename a rosinality (residual) Discriminator state dict onto ours: (init_kwargs, state_dict).

    convs.0 (1x1 ConvLayer) -> b{R}.fromrgb; convs.k ResBlock -> b{R/2^(k-1)}: conv1 -> conv0,
    conv2 (blur + stride-2 conv) -> conv1, skip -> skip; final_conv -> b4.conv;
    final_linear.0/1 -> b4.fc / b4.out. EqualConv2d/EqualLinear scales equal NVIDIA's weight gains,
    and (out + skip) / sqrt(2) equals NVIDIA's gain=sqrt(0.5) on both branches.
    """
    if "convs.0.0.weight" not in sd or "final_conv.0.weight" not in sd:
        raise CheckpointError(f"{where}: not a rosinality StyleGAN2 discriminator (no convs.0.0.weight)")
    n_blocks = 0
    while f"convs.{n_blocks + 1}.conv1.0.weight" in sd:
        n_blocks += 1
    size = 2 ** (n_blocks + 2)
    fromrgb = _get(sd, "convs.0.0.weight", where)  # [C, img_channels, 1, 1]
    channels = {size: fromrgb.shape[0]}
    for k in range(1, n_blocks + 1):
        channels[size // 2**k] = _get(sd, f"convs.{k}.conv2.1.weight", where).shape[0]
    channel_base, channel_max = _fit_channels(channels, where)
    final_in = _get(sd, "final_conv.0.weight", where).shape[1]
    mbstd_channels = final_in - channels[4]
    resample_filter = (_resample_filter(sd, "convs.1.conv2.0.kernel", 1.0, where) if n_blocks
                       else [1, 3, 3, 1])
    block_kwargs: dict = {}
    if resample_filter != [1, 3, 3, 1]:
        block_kwargs["resample_filter"] = resample_filter
    kwargs = dict(_class="Discriminator", c_dim=0, img_resolution=size, img_channels=int(fromrgb.shape[1]),
                  architecture="resnet", channel_base=channel_base, channel_max=channel_max,
                  block_kwargs=block_kwargs,
                  epilogue_kwargs=dict(mbstd_group_size=4, mbstd_num_channels=int(mbstd_channels)))

    out: dict[str, torch.Tensor] = {
        f"b{size}.fromrgb.weight": fromrgb,
        f"b{size}.fromrgb.bias": _get(sd, "convs.0.1.bias", where),
    }
    for k in range(1, n_blocks + 1):
        res = size // 2 ** (k - 1)
        out[f"b{res}.conv0.weight"] = _get(sd, f"convs.{k}.conv1.0.weight", where)
        out[f"b{res}.conv0.bias"] = _get(sd, f"convs.{k}.conv1.1.bias", where)
        out[f"b{res}.conv1.weight"] = _get(sd, f"convs.{k}.conv2.1.weight", where)
        out[f"b{res}.conv1.bias"] = _get(sd, f"convs.{k}.conv2.2.bias", where)
        out[f"b{res}.skip.weight"] = _get(sd, f"convs.{k}.skip.1.weight", where)
    out["b4.conv.weight"] = _get(sd, "final_conv.0.weight", where)
    out["b4.conv.bias"] = _get(sd, "final_conv.1.bias", where)
    out["b4.fc.weight"] = _get(sd, "final_linear.0.weight", where)
    out["b4.fc.bias"] = _get(sd, "final_linear.0.bias", where)
    out["b4.out.weight"] = _get(sd, "final_linear.1.weight", where)
    out["b4.out.bias"] = _get(sd, "final_linear.1.bias", where)
    return kwargs, out
