"""The sample page starts, serves its named endpoint, and renders what the generator renders."""

import numpy as np
import pytest
import torch
from PIL import Image

import app


@pytest.fixture(scope="module")
def tiny_G():
    from faceapp.stylegan.networks import Generator

    torch.manual_seed(1)
    return Generator(**app.UNTRAINED_CONFIG).eval()


def test_render_grid_matches_direct_generator_call(tiny_G):
    images = app.render_grid(tiny_G, seed=3, truncation_psi=0.5, count=2)
    z = torch.from_numpy(np.random.RandomState(4).randn(1, tiny_G.z_dim)).float()
    with torch.inference_mode():
        img = tiny_G(z, torch.zeros(1, 0), truncation_psi=0.5, noise_mode="const")
    expected = ((img[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    assert np.array_equal(np.asarray(images[1]), expected)
    assert not np.array_equal(np.asarray(images[0]), np.asarray(images[1]))


def test_missing_model_says_so(tmp_path):
    G, description = app.load_model(tmp_path / "nope.safetensors")
    assert "No trained generator" in description and G.img_resolution == 64


def test_launched_app_answers_gradio_client(tiny_G):
    from gradio_client import Client

    demo = app.build_demo(tiny_G, "test")
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        result = client.predict(7, 0.7, api_name="/sample")
        assert len(result) == 4
        first = Image.open(result[0]["image"] if isinstance(result[0], dict) else result[0][0])
        assert first.size == (64, 64)
        assert np.array_equal(np.asarray(first.convert("RGB")), np.asarray(app.render_grid(tiny_G, 7, 0.7, 1)[0]))
    finally:
        demo.close()
