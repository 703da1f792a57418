"""A cheap preview of a large generator's render: its synthesis network run only up to a lower resolution.

With the 'skip' architecture (StyleGAN2's default, config-f's), every synthesis block adds its toRGB output
to an upsampled running image, so the image after block b256 is the render at 256 px minus the fine detail
the 512 and 1024 blocks would add. Those two blocks are most of a 1024 px render's cost on a CPU, so the
256 px image is a fast stand-in while a slider moves (`synthesis_upto(G.synthesis, ws, 256)`), and the full
render follows.

This runs `SynthesisNetwork.run_blocks`, the block loop `SynthesisNetwork.forward` runs, stopped early; it
never changes the network.
"""

from __future__ import annotations

import torch

__all__ = ["preview_resolutions", "synthesis_upto"]


def preview_resolutions(synthesis: torch.nn.Module) -> list[int]:
    """Resolutions `synthesis_upto` can stop at: those of blocks that output an image (all blocks with the
    'skip' architecture; only the last one otherwise)."""
    out = []
    for res in synthesis.block_resolutions:
        block = getattr(synthesis, f"b{res}")
        if block.num_torgb:
            out.append(int(res))
    return out


@torch.no_grad()
def synthesis_upto(synthesis: torch.nn.Module, ws: torch.Tensor, resolution: int, *,
                   noise_mode: str = "const") -> torch.Tensor:
    """ws [N, num_ws, w_dim] -> img [N, img_channels, resolution, resolution], the running skip image after
    block b{resolution} (about [-1, 1]). At the network's own resolution this is `synthesis(ws)` itself.

    Raises ValueError for a resolution without an image output (see `preview_resolutions`).
    """
    allowed = preview_resolutions(synthesis)
    if resolution not in allowed:
        raise ValueError(f"no image output at {resolution} px; this network has one at {allowed}")
    if tuple(ws.shape[1:]) != (synthesis.num_ws, synthesis.w_dim):
        raise ValueError(f"ws must be [N, {synthesis.num_ws}, {synthesis.w_dim}], got {tuple(ws.shape)}")
    return synthesis.run_blocks(ws, resolution, noise_mode=noise_mode)
