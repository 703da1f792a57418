"""faceapp web app (Gradio).

Until the editing UI lands this page renders samples from the model bundle's generator: pick a seed and a
truncation, get faces. `python app.py [--model PATH]`; the FACEAPP_MODEL environment variable works too.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "demo" / "generator.safetensors"

# A stand-in used only when no trained generator exists yet: the page says so instead of failing to start.
UNTRAINED_CONFIG = dict(
    z_dim=64, c_dim=0, w_dim=64, img_resolution=64, img_channels=3,
    mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=1024, channel_max=64),
)


def load_model(path: str | os.PathLike | None):
    """Return (G, description) for the generator at `path`, or an untrained stand-in if none is there."""
    import torch

    from faceapp.stylegan.checkpoint import load_generator
    from faceapp.stylegan.networks import Generator

    path = Path(path) if path else DEFAULT_MODEL
    if path.exists():
        G = load_generator(path, device="cpu").eval()
        return G, f"Generator: `{path.name}` ({G.img_resolution}x{G.img_resolution})"
    torch.manual_seed(0)
    G = Generator(**UNTRAINED_CONFIG).eval()
    return G, (
        f"**No trained generator found at `{path}`**: showing an *untrained* network, so expect noise, not faces. "
        "Convert official FFHQ weights with `python -m faceapp convert ffhq.pkl ffhq.safetensors` and start "
        "`python app.py --model ffhq.safetensors`."
    )


def render_grid(G, seed: int, truncation_psi: float, count: int = 4):
    """Render `count` images from consecutive seeds as a list of PIL images."""
    import numpy as np
    import torch
    from PIL import Image

    images = []
    with torch.inference_mode():
        for s in range(int(seed), int(seed) + int(count)):
            z = torch.from_numpy(np.random.RandomState(s).randn(1, G.z_dim)).float()  # [1, z_dim]
            c = torch.zeros(1, G.c_dim)
            ws = G.mapping(z, c, truncation_psi=float(truncation_psi))  # [1, num_ws, w_dim]
            img = G.synthesis(ws, noise_mode="const")  # [1, C, H, W] in ~[-1, 1]
            arr = ((img[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
            images.append(Image.fromarray(arr))
    return images


def build_demo(G, description: str):
    """The Gradio Blocks page around generator `G`."""
    import gradio as gr

    def sample(seed, truncation_psi):
        return render_grid(G, seed, truncation_psi)

    with gr.Blocks(title="faceapp") as demo:
        gr.Markdown("# faceapp\nFaces from the bundled StyleGAN2 generator. " + description)
        with gr.Row():
            seed = gr.Number(value=0, precision=0, label="Seed", minimum=0, maximum=2**31 - 5)
            psi = gr.Slider(0.0, 1.0, value=0.7, step=0.05, label="Truncation ψ (lower: more typical faces)")
        button = gr.Button("Generate", variant="primary")
        gallery = gr.Gallery(label="Samples", columns=4, height="auto", format="png")
        button.click(sample, inputs=[seed, psi], outputs=gallery, api_name="sample", concurrency_limit=1)
        demo.load(sample, inputs=[seed, psi], outputs=gallery)
    return demo


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("FACEAPP_MODEL"), help="generator checkpoint (.safetensors)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    args = parser.parse_args(argv)
    G, description = load_model(args.model)
    build_demo(G, description).queue(default_concurrency_limit=1).launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
