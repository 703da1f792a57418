"""StyleGAN2 generator / discriminator: layers against naive maths, wiring, shapes, sizes, API."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from faceapp.errors import FaceAppError
from faceapp.stylegan import Discriminator, Generator, mix_styles, sample_mixing_cutoff
from faceapp.stylegan.layers import Conv2dLayer, MinibatchStdLayer, SynthesisLayer
from faceapp.stylegan.ops import modulated_conv2d

# --------------------------------------------------------------------------------------------
# Independent naive reference computations.

BLUR = torch.tensor([1.0, 3.0, 3.0, 1.0])


def naive_blur_kernel():
    k = torch.outer(BLUR, BLUR)
    return k / k.sum()  # [4, 4], symmetric so convolution == correlation


def naive_zero_insert_up2(x):
    """Upsample by 2 by inserting zeros after every pixel, times 4 to keep the mean."""
    n, c, h, w = x.shape
    u = torch.zeros(n, c, 2 * h, 2 * w, dtype=x.dtype)
    u[:, :, ::2, ::2] = x
    return u * 4


def naive_blur(x, pad):
    """Zero-pad [x0, x1, y0, y1] then depthwise-filter with the [1,3,3,1] kernel (valid)."""
    c = x.shape[1]
    x = F.pad(x, pad)
    k = naive_blur_kernel().to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, k, groups=c)


def naive_modconv(x, weight, styles, demodulate=True, up=1, padding=1):
    """One sample at a time: explicit per-sample weights, then F.conv2d.

    up=2 follows the official upsampling layer: zero-insert, pad (3, 2) (the [1,3,3,1] filter
    centred on the 2x grid plus the conv padding), blur, then a *true* convolution (flipped
    kernel) without further padding.
    """
    outs = []
    for i in range(x.shape[0]):
        w = weight * styles[i].reshape(1, -1, 1, 1)  # [O, I, k, k]
        if demodulate:
            w = w / torch.sqrt((w**2).sum(dim=[1, 2, 3], keepdim=True) + 1e-8)
        xi = x[i : i + 1]
        if up == 1:
            outs.append(F.conv2d(xi, w, padding=padding))
        else:
            u = naive_blur(naive_zero_insert_up2(xi), [3, 2, 3, 2])
            outs.append(F.conv2d(u, w.flip([2, 3])))
    return torch.cat(outs)


def lrelu(x):
    return F.leaky_relu(x, 0.2) * math.sqrt(2)


# --------------------------------------------------------------------------------------------
# Tiny configs.


def tiny_G(res=16, **synthesis_kwargs):
    kw = dict(channel_base=16 * res, channel_max=16)
    kw.update(synthesis_kwargs)
    return Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=res, img_channels=3,
                     mapping_kwargs=dict(num_layers=2), synthesis_kwargs=kw).eval()


def set_noise_strength(G, value):
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(value)


# --------------------------------------------------------------------------------------------
# Modulated conv against the naive computation.


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv_matches_naive(fused, demodulate):
    torch.manual_seed(1)
    x = torch.randn(3, 5, 6, 6, dtype=torch.float64)
    weight = torch.randn(4, 5, 3, 3, dtype=torch.float64)
    styles = torch.randn(3, 5, dtype=torch.float64)
    got = modulated_conv2d(x, weight, styles, padding=1, demodulate=demodulate, fused_modconv=fused)
    want = naive_modconv(x, weight, styles, demodulate=demodulate)
    assert got.shape == (3, 4, 6, 6)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("fused", [True, False])
def test_modulated_conv_up2_matches_naive(fused):
    from faceapp.cuda.upfirdn2d import setup_filter

    torch.manual_seed(2)
    x = torch.randn(2, 5, 5, 5, dtype=torch.float64)
    weight = torch.randn(4, 5, 3, 3, dtype=torch.float64)
    styles = torch.randn(2, 5, dtype=torch.float64)
    f = setup_filter([1, 3, 3, 1])
    got = modulated_conv2d(x, weight, styles, up=2, padding=1, resample_filter=f, flip_weight=False,
                           fused_modconv=fused)
    want = naive_modconv(x, weight, styles, up=2)
    assert got.shape == (2, 4, 10, 10)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kernel", [3, 1])
def test_downsampling_conv_matches_naive(kernel):
    """The discriminator's conv1 (3x3) and skip (1x1): blur, then stride-2 sampling."""
    torch.manual_seed(6)
    layer = Conv2dLayer(5, 4, kernel_size=kernel, down=2, activation="lrelu", bias=True).double()
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 5, 8, 8, dtype=torch.float64)
    w = layer.weight / math.sqrt(5 * kernel * kernel)
    if kernel == 3:  # FIR-pad by 2 (filter centring + conv padding), blur, strided 3x3 conv
        want = F.conv2d(naive_blur(x, [2, 2, 2, 2]), w, stride=2)
    else:  # blur with padding 1, keep every second pixel, 1x1 conv
        want = F.conv2d(naive_blur(x, [1, 1, 1, 1])[:, :, ::2, ::2], w)
    want = lrelu(want + layer.bias.reshape(1, -1, 1, 1))
    got = layer(x)
    assert got.shape == (2, 4, 4, 4)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_synthesis_layer_clamp_and_noise():
    layer = SynthesisLayer(4, 4, w_dim=8, resolution=8, conv_clamp=0.05).eval()
    x = torch.randn(2, 4, 8, 8) * 10
    w = torch.randn(2, 8)
    y = layer(x, w, noise_mode="none")
    assert y.abs().max() <= 0.05 + 1e-6
    assert (y.abs() > 0.049).any()  # the clamp was active, not just a small output
    with pytest.raises(FaceAppError, match="noise_mode"):
        layer(x, w, noise_mode="sometimes")


# --------------------------------------------------------------------------------------------
# The whole tiny generator against the layers composed by hand.


def test_tiny_generator_matches_hand_composition():
    torch.manual_seed(3)
    G = tiny_G(res=8).double()  # fp64 in, fp64 through (fp32 otherwise)
    set_noise_strength(G, 0.3)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))  # nonzero biases exercise the bias gains
    z = torch.randn(2, 16, dtype=torch.float64)
    got = G(z, None, noise_mode="const")

    # Mapping: pixel-norm, then fc layers with lr multiplier 0.01 applied at run time.
    m = G.mapping
    x = z / torch.sqrt((z**2).mean(dim=1, keepdim=True) + 1e-8)
    for i in range(2):
        fc = getattr(m, f"fc{i}")
        x = lrelu(x @ (fc.weight.T * 0.01 / math.sqrt(fc.weight.shape[1])) + fc.bias * 0.01)
    w = x  # [2, 16]; no truncation so every layer gets the same w

    def style(affine, w):
        return w @ (affine.weight.T / math.sqrt(affine.weight.shape[1])) + affine.bias

    def syn_layer(layer, x, up):
        s = style(layer.affine, w)
        h = naive_modconv(x, layer.weight, s, up=up)
        h = h + layer.noise_const * layer.noise_strength
        return lrelu(h + layer.bias.reshape(1, -1, 1, 1))

    def torgb(layer, x):
        s = style(layer.affine, w) / math.sqrt(layer.weight.shape[1])
        return naive_modconv(x, layer.weight, s, demodulate=False, padding=0) + layer.bias.reshape(1, -1, 1, 1)

    b4, b8 = G.synthesis.b4, G.synthesis.b8
    h = b4.const.unsqueeze(0).repeat(2, 1, 1, 1)
    h = syn_layer(b4.conv1, h, up=1)
    img = torgb(b4.torgb, h)
    h = syn_layer(b8.conv0, h, up=2)
    h = syn_layer(b8.conv1, h, up=1)
    img = naive_blur(naive_zero_insert_up2(img), [2, 1, 2, 1]) + torgb(b8.torgb, h)
    torch.testing.assert_close(got, img, rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------------------------
# Shapes, configs, sizes.


@pytest.mark.parametrize("res", [16, 32, 64])
def test_shapes_for_several_resolutions(res):
    G = tiny_G(res=res, channel_base=8 * res, channel_max=8)
    assert G.num_ws == 2 * int(math.log2(res)) - 2
    z = torch.randn(2, 16)
    ws = G.mapping(z, None)
    assert ws.shape == (2, G.num_ws, 16)
    img = G.synthesis(ws)
    assert img.shape == (2, 3, res, res) and img.dtype == torch.float32
    D = Discriminator(c_dim=0, img_resolution=res, img_channels=3, channel_base=8 * res, channel_max=8)
    assert D(img, None).shape == (2, 1)


def test_bad_resolution_and_ws_shape_raise_actionable_errors():
    with pytest.raises(FaceAppError, match="power of two"):
        tiny_G(res=48)
    G = tiny_G(res=16)
    with pytest.raises(FaceAppError, match="ws has shape"):
        G.synthesis(torch.zeros(1, G.num_ws + 1, 16))


def _expected_G_params(res, z_dim, w_dim, n_map, base, cmax, img_ch=3):
    ch = {2**i: min(base // 2**i, cmax) for i in range(2, int(math.log2(res)) + 1)}

    def syn(cin, cout):  # affine (w_dim -> cin, +bias), 3x3 weight, bias, noise_strength
        return w_dim * cin + cin + cout * cin * 9 + cout + 1

    def rgb(cin):  # affine, 1x1 weight, bias
        return w_dim * cin + cin + img_ch * cin + img_ch

    mapping = (z_dim * w_dim + w_dim) + (n_map - 1) * (w_dim * w_dim + w_dim)
    total = ch[4] * 16 + syn(ch[4], ch[4]) + rgb(ch[4])
    for r in list(ch)[1:]:
        total += syn(ch[r // 2], ch[r]) + syn(ch[r], ch[r]) + rgb(ch[r])
    return mapping + total


def _expected_D_params(res, base, cmax, img_ch=3):
    ch = {2**i: min(base // 2**i, cmax) for i in range(2, int(math.log2(res)) + 1)}
    total = img_ch * ch[res] + ch[res]  # fromrgb
    for r in range(int(math.log2(res)), 2, -1):
        t, o = ch[2**r], ch[2 ** (r - 1)]
        total += (t * t * 9 + t) + (o * t * 9 + o) + o * t  # conv0, conv1 (down), skip (no bias)
    c = ch[4]
    total += ((c + 1) * c * 9 + c) + (c * 16 * c + c) + (c + 1)  # mbstd conv, fc, out
    return total


def test_config_f_1024_parameter_counts_and_names():
    kw = dict(channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256)
    with torch.device("meta"):
        G = Generator(512, 0, 512, 1024, 3, mapping_kwargs=dict(num_layers=8), synthesis_kwargs=kw)
        D = Discriminator(0, 1024, 3, **kw)
    n_g = sum(p.numel() for p in G.parameters())
    n_d = sum(p.numel() for p in D.parameters())
    assert n_g == _expected_G_params(1024, 512, 512, 8, 32768, 512)
    assert n_d == _expected_D_params(1024, 32768, 512)
    # The published figures are rounded: G ~30M (30.37M exactly), D ~29.0M.
    assert abs(n_g / 30.0e6 - 1) < 0.02 and abs(n_d / 29.0e6 - 1) < 0.01
    assert G.num_ws == 18
    sd_g, sd_d = G.state_dict(), D.state_dict()
    # A few names/shapes as they appear in the official FFHQ pickle.
    for key, shape in [("mapping.w_avg", (512,)), ("mapping.fc7.weight", (512, 512)),
                       ("synthesis.b4.const", (512, 4, 4)), ("synthesis.b4.conv1.noise_const", (4, 4)),
                       ("synthesis.b8.conv0.resample_filter", (4, 4)), ("synthesis.b1024.conv1.weight", (32, 32, 3, 3)),
                       ("synthesis.b1024.torgb.affine.weight", (32, 512)), ("synthesis.b64.conv0.noise_strength", ())]:
        assert tuple(sd_g[key].shape) == shape, key
    for key, shape in [("b1024.fromrgb.weight", (32, 3, 1, 1)), ("b1024.skip.weight", (64, 32, 1, 1)),
                       ("b4.conv.weight", (512, 513, 3, 3)), ("b4.fc.weight", (512, 8192)), ("b4.out.bias", (1,))]:
        assert tuple(sd_d[key].shape) == shape, key
    assert "b512.fromrgb.weight" not in sd_d  # resnet D reads the image only once


def test_init_kwargs_json_round_trip_rebuilds_same_network():
    G = tiny_G(res=16, conv_clamp=256, resample_filter=(1, 3, 3, 1))
    set_noise_strength(G, 0.2)
    G2 = Generator(**json.loads(json.dumps(G.init_kwargs))).eval()
    G2.load_state_dict(G.state_dict(), strict=True)
    z = torch.randn(2, 16)
    torch.testing.assert_close(G2(z, None), G(z, None), rtol=0, atol=0)
    D = Discriminator(c_dim=4, img_resolution=16, img_channels=3, channel_base=128, channel_max=16,
                      epilogue_kwargs=dict(mbstd_group_size=2))
    D2 = Discriminator(**json.loads(json.dumps(D.init_kwargs)))
    D2.load_state_dict(D.state_dict(), strict=True)
    img, c = torch.randn(2, 3, 16, 16), torch.randn(2, 4)
    torch.testing.assert_close(D2(img, c), D(img, c), rtol=0, atol=0)


def test_fp16_blocks_run_in_fp32_on_cpu_with_same_result():
    G = tiny_G(res=16)
    G16 = tiny_G(res=16, num_fp16_res=2)
    G16.load_state_dict(G.state_dict(), strict=True)
    assert G16.synthesis.b16.use_fp16 and not G16.synthesis.b4.use_fp16
    ws = G.mapping(torch.randn(2, 16), None)
    img = G16.synthesis(ws)
    assert img.dtype == torch.float32
    torch.testing.assert_close(img, G.synthesis(ws))


def test_fused_and_unfused_modconv_agree_on_whole_network():
    G = tiny_G(res=16)
    set_noise_strength(G, 0.3)
    ws = G.mapping(torch.randn(3, 16), None)
    torch.testing.assert_close(G.synthesis(ws, fused_modconv=True), G.synthesis(ws, fused_modconv=False),
                               rtol=1e-4, atol=1e-5)


def test_resnet_synthesis_architecture_runs():
    G = tiny_G(res=16, architecture="resnet")
    assert not hasattr(G.synthesis.b8, "torgb") and hasattr(G.synthesis.b16, "torgb")
    assert hasattr(G.synthesis.b8, "skip")
    assert G(torch.randn(1, 16), None).shape == (1, 3, 16, 16)


# --------------------------------------------------------------------------------------------
# Mapping: truncation, w_avg, style mixing.


def test_truncation_psi0_returns_w_avg_exactly():
    G = tiny_G()
    G.mapping.w_avg.copy_(torch.randn(16))
    ws = G.mapping(torch.randn(4, 16), None, truncation_psi=0)
    assert torch.equal(ws, G.mapping.w_avg.expand(4, G.num_ws, 16))


def test_truncation_cutoff_applies_to_first_layers_only():
    G = tiny_G()
    G.mapping.w_avg.copy_(torch.randn(16))
    z = torch.randn(3, 16)
    ws = G.mapping(z, None)
    wt = G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=3)
    avg = G.mapping.w_avg
    torch.testing.assert_close(wt[:, :3], avg + 0.5 * (ws[:, :3] - avg))
    assert torch.equal(wt[:, 3:], ws[:, 3:])
    assert not torch.allclose(wt[:, :3], ws[:, :3])


def test_w_avg_tracks_batch_mean_only_with_update_emas():
    G = tiny_G().train()
    beta = G.mapping.w_avg_beta
    z = torch.randn(8, 16)
    G.mapping(z, None)
    assert torch.equal(G.mapping.w_avg, torch.zeros(16))  # no update unless asked
    old = torch.randn(16)
    G.mapping.w_avg.copy_(old)
    ws = G.mapping(z, None, update_emas=True)
    mean = ws[:, 0].detach().mean(dim=0)
    torch.testing.assert_close(G.mapping.w_avg, mean + beta * (old - mean))
    # Repeating the same batch converges toward its mean.
    for _ in range(2000):
        G.mapping(z, None, update_emas=True)
    torch.testing.assert_close(G.mapping.w_avg, mean, rtol=1e-3, atol=1e-3)


def test_w_avg_update_under_bf16_autocast_stays_fp32():
    G = tiny_G().train()
    z = torch.randn(8, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ws = G.mapping(z, None, update_emas=True)
    assert G.mapping.w_avg.dtype == torch.float32
    mean = ws[:, 0].float().mean(dim=0)
    torch.testing.assert_close(G.mapping.w_avg, (1 - G.mapping.w_avg_beta) * mean)



def test_conditional_mapping_uses_label():
    G = Generator(z_dim=8, c_dim=3, w_dim=8, img_resolution=8, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=64, channel_max=8))
    z = torch.randn(1, 8).repeat(2, 1)
    c = torch.eye(3)[:2]
    ws = G.mapping(z, c)
    assert ws.shape == (2, G.num_ws, 8) and not torch.allclose(ws[0], ws[1])


def test_mix_styles_switches_at_cutoff():
    a, b = torch.randn(3, 6, 4), torch.randn(3, 6, 4)
    m = mix_styles(a, b, 2)
    assert torch.equal(m[:, :2], a[:, :2]) and torch.equal(m[:, 2:], b[:, 2:])
    m = mix_styles(a, b, torch.tensor([1, 6, 4]))
    assert torch.equal(m[0, :1], a[0, :1]) and torch.equal(m[0, 1:], b[0, 1:])
    assert torch.equal(m[1], a[1])
    assert torch.equal(m[2, :4], a[2, :4]) and torch.equal(m[2, 4:], b[2, 4:])


def test_sample_mixing_cutoff():
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(sample_mixing_cutoff(16, 6, prob=0.0, generator=gen), torch.full([16], 6))
    cut = sample_mixing_cutoff(256, 6, prob=1.0, generator=gen)
    assert cut.min() >= 1 and cut.max() <= 5 and len(cut.unique()) == 5
    cut = sample_mixing_cutoff(1000, 6, prob=0.5, generator=gen)
    assert 350 < int((cut < 6).sum()) < 650


def test_style_mixing_changes_only_fine_or_coarse_as_expected():
    G = tiny_G(res=16)
    wa = G.mapping(torch.randn(1, 16), None)
    wb = G.mapping(torch.randn(1, 16), None)
    img_a = G.synthesis(wa)
    assert torch.equal(G.synthesis(mix_styles(wa, wb, G.num_ws)), img_a)
    assert not torch.allclose(G.synthesis(mix_styles(wa, wb, G.num_ws - 1)), img_a)


# --------------------------------------------------------------------------------------------
# Noise modes.


def test_noise_modes():
    G = tiny_G(res=16)
    set_noise_strength(G, 0.5)
    ws = G.mapping(torch.randn(2, 16), None)
    const1, const2 = G.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const")
    assert torch.equal(const1, const2)
    r1, r2 = G.synthesis(ws, noise_mode="random"), G.synthesis(ws, noise_mode="random")
    assert not torch.allclose(r1, r2)
    none = G.synthesis(ws, noise_mode="none")
    assert not torch.allclose(none, const1)
    set_noise_strength(G, 0.0)  # with zero strength every mode is the same image
    torch.testing.assert_close(G.synthesis(ws, noise_mode="none"), G.synthesis(ws, noise_mode="const"))


# --------------------------------------------------------------------------------------------
# Discriminator.


def test_minibatch_std_matches_group_statistics():
    x = torch.randn(8, 6, 3, 3, dtype=torch.float64)
    y = MinibatchStdLayer(group_size=4)(x)
    assert y.shape == (8, 7, 3, 3)
    torch.testing.assert_close(y[:, :6], x)
    n = 8 // 4
    for i in range(8):
        members = x[i % n :: n]  # the official grouping: sample i shares stats with i +- n, ...
        want = torch.sqrt(members.var(dim=0, unbiased=False) + 1e-8).mean()
        torch.testing.assert_close(y[i, 6], want.expand(3, 3))


def test_discriminator_conditional_output_and_r1():
    torch.manual_seed(4)
    D = Discriminator(c_dim=2, img_resolution=16, img_channels=3, channel_base=128, channel_max=16,
                      conv_clamp=256)
    real = torch.randn(4, 3, 16, 16, requires_grad=True)
    c = torch.eye(2)[[0, 1, 0, 1]]
    logits = D(real, c)
    assert logits.shape == (4, 1)
    (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    r1 = grad.square().sum(dim=[1, 2, 3]).mean()
    r1.backward()
    # Every weight reaches the penalty (biases of the last layer cannot: they do not depend on x).
    grads = [p.grad for n, p in D.named_parameters() if n.endswith("weight")]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert D.b16.conv0.weight.grad.abs().sum() > 0


def test_discriminator_second_order_gradients_numerically():
    torch.manual_seed(5)
    D = Discriminator(c_dim=0, img_resolution=8, img_channels=1, channel_base=16, channel_max=2,
                      epilogue_kwargs=dict(mbstd_group_size=2)).double()
    img = torch.randn(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    # lrelu has zero curvature almost everywhere, so second derivatives are well defined here.
    assert torch.autograd.gradgradcheck(lambda x: D(x, None), (img,), atol=1e-6, rtol=1e-5, fast_mode=True)


def test_freeze_layers_makes_buffers():
    D = Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=128, channel_max=16,
                      block_kwargs=dict(freeze_layers=2))
    names = {n for n, _ in D.named_parameters()}
    assert "b16.fromrgb.weight" not in names and "b16.conv0.weight" not in names
    assert "b16.conv1.weight" in names
    assert "b16.fromrgb.weight" in D.state_dict()


@pytest.mark.cuda
def test_fp16_blocks_on_cuda_close_to_fp32():
    G = tiny_G(res=32, channel_base=512, channel_max=32, num_fp16_res=2, conv_clamp=256).cuda()
    assert G.synthesis.b32.use_fp16
    ws = G.mapping(torch.randn(4, 16, device="cuda"), None)
    img16 = G.synthesis(ws)
    img32 = G.synthesis(ws, force_fp32=True)
    assert img16.dtype == torch.float32 and img16.device.type == "cuda"
    assert (img16 - img32).abs().max() < 0.05 * img32.abs().max()
    cpu = G.cpu().synthesis(ws.cpu())
    torch.testing.assert_close(img32.cpu(), cpu, rtol=1e-3, atol=1e-3)
