"""Shared pytest set-up: offline, quiet, deterministic; `cuda` tests skip without a GPU."""

import os

# Before anything imports gradio / huggingface_hub: no analytics, no hub calls.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """The tests' networks are tiny: one thread is as fast alone and many times faster on a shared 2-core box."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed():
    import torch

    torch.manual_seed(0)
    yield


@pytest.fixture
def bench_script():
    """Load a bench/ script as a module by its name: ``bench_script("years_bound")`` (bench/ is not a package)."""
    import importlib.util
    from pathlib import Path

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load


@pytest.fixture(scope="session")
def tiny_invert():
    """An InvertConfig of two projection steps per stage without the perceptual net: for tests of the flow, not
    of the inversion's quality."""
    from faceapp.inversion import InvertConfig

    return InvertConfig(fast_steps_no_encoder=2, balanced_w_steps_no_encoder=2, balanced_wplus_steps_no_encoder=2,
                        pti_steps=2, perceptual_weight=0.0)


@pytest.fixture(scope="session")
def random_bundle(tmp_path_factory):
    """``random_bundle(seed)``: a loaded tiny random 32 px bundle (faceapp.bundle.make_random_bundle), made in a
    fresh temporary folder."""
    from faceapp.bundle import load_bundle, make_random_bundle

    def make(seed: int):
        return load_bundle(make_random_bundle(tmp_path_factory.mktemp("b") / "bundle", resolution=32, seed=seed))

    return make
