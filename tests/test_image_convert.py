"""faceapp.imageio.to_uint8 / from_uint8: bit-identical to the expressions they replace, both ways."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from faceapp.imageio import from_uint8, to_uint8


def _old_to_uint8(img: torch.Tensor) -> np.ndarray:  # the hand-written form (learn_directions, quality, ...)
    return ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _old_from_uint8(arr: np.ndarray) -> torch.Tensor:  # the hand-written form (train_detail, age_estimator, ...)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1


def _hard_floats(dtype) -> torch.Tensor:
    """[N,3,4,5] of values that test the mapping: out of range, every pixel's centre and its rounding halves."""
    k = torch.arange(256, dtype=torch.float64)
    exact = k / 127.5 - 1  # lands on each integer
    halves = (k + 0.5) / 127.5 - 1  # lands on k + 0.5: round half to even decides
    nudged = torch.cat([torch.nextafter(halves, halves + 1), torch.nextafter(halves, halves - 1)])
    rand = torch.empty(4000, dtype=torch.float64).uniform_(-1.3, 1.3, generator=torch.Generator().manual_seed(0))
    special = torch.tensor([-1.0, 1.0, -5.0, 5.0, 0.0, -0.0, -1.0000001, 1.0000001])
    v = torch.cat([exact, halves, nudged, rand, special]).to(dtype)
    n = -(-len(v) // 60) * 60
    return torch.cat([v, v[: n - len(v)]]).reshape(-1, 3, 4, 5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64, torch.bfloat16])
def test_to_uint8_is_bit_identical_to_the_old_expression(dtype):
    x = _hard_floats(dtype)
    new, old = to_uint8(x), _old_to_uint8(x)
    assert new.dtype == np.uint8 and new.shape == (len(x), 4, 5, 3)
    np.testing.assert_array_equal(new, old)
    assert new.min() == 0 and new.max() == 255  # the clamp is there


def test_to_uint8_rounds_and_takes_one_image():
    # 0 maps to exactly 127.5: rounded to 128 (a truncating conversion, like torchvision's save_image, gives 127)
    x = torch.tensor([-1.0, 0.0, 1.0]).reshape(3, 1, 1).expand(3, 2, 2)
    assert ((x + 1) * 127.5)[:, 0, 0].tolist() == [0.0, 127.5, 255.0]
    out = to_uint8(x)  # one image [3, H, W] -> [H, W, 3]
    assert out.shape == (2, 2, 3) and out[0, 0].tolist() == [0, 128, 255]
    np.testing.assert_array_equal(out, _old_to_uint8(x[None])[0])


def test_to_uint8_needs_no_grad_mode_and_leaves_the_input_alone():
    x = torch.rand(2, 3, 4, 4, requires_grad=True) * 2.4 - 1.2
    before = x.detach().clone()
    np.testing.assert_array_equal(to_uint8(x), _old_to_uint8(x.detach()))
    assert torch.equal(x.detach(), before)


def test_from_uint8_is_bit_identical_to_the_old_expression():
    arr = np.arange(256 * 3, dtype=np.int64).reshape(4, 8, 8, 3).astype(np.uint8)  # every value, several times
    new, old = from_uint8(arr), _old_from_uint8(arr)
    assert new.dtype == torch.float32 and new.shape == (4, 3, 8, 8)
    assert torch.equal(new, old)
    assert new.min() == -1 and new.max() == 1
    # one image, as a (read-only) PIL array or a PIL image: [3, H, W], the same numbers
    im = Image.fromarray(arr[1])
    ro = np.asarray(im)
    assert not ro.flags.writeable
    assert torch.equal(from_uint8(ro), old[1]) and torch.equal(from_uint8(im), old[1])
    # bench/invert's form: on a device, with a batch axis added after
    assert torch.equal(from_uint8(arr[2], "cpu")[None],
                       torch.from_numpy(arr[2].copy()).permute(2, 0, 1)[None].to("cpu", torch.float32) / 127.5 - 1)


def test_round_trip_keeps_every_pixel_value():
    arr = np.random.default_rng(0).integers(0, 256, (3, 7, 9, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_uint8(from_uint8(arr)), arr)
    np.testing.assert_array_equal(to_uint8(from_uint8(arr[0])), arr[0])
