"""The CPU training recipe: projected discriminator (and its heads' minibatch-std feature), DiffAugment, hinge
loss, recipe options, the quality measure (and its age / gender shares), and prepare_dataset's already-aligned
path. Tiny networks, a few steps."""

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from faceapp.stylegan.checkpoint import load_networks, read_header, save_networks
from training import prepare_dataset as prep
from training.age_gender import AgeGenderModel
from training.dataset import ImageArchive, write_synthetic_archive
from training.diffaug import DiffAugment, cutout, translation
from training.loss import HingeLoss
from training.projected import Head, ProjectedDiscriminator, minibatch_std, register
from training.quality import FaceQuality, frechet_distance, gaussian
from training.train_generator import build_parser, main, resolve_options

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    return write_synthetic_archive(tmp_path_factory.mktemp("data") / "blobs.zip", num_images=32, resolution=16,
                                   seed=0)


@pytest.fixture(scope="module")
def mobilenet_weights():
    from faceapp.inversion.losses import load_mobilenet_v2_weights

    return load_mobilenet_v2_weights()


def _held_out_photos(tmp_path, seed: int, n: int = 4) -> Path:
    """A zip standing in for UTKFace's, with n random 40 px 'held-out photos' named in tmp_path/held.txt."""
    src = tmp_path / "photos.zip"
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(src, "w") as zf:
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(buf, format="PNG")
            zf.writestr(f"held{i}.png", buf.getvalue())
    (tmp_path / "held.txt").write_text("".join(f"held{i}.png\n" for i in range(n)))
    return src


def train(data, outdir, steps, *extra):
    return main(["--cpu-smoke", "--recipe", "fast", "--data", str(data), "--outdir", str(outdir),
                 "--kimg", str(steps * 4 / 1000), "--grid", "2", *map(str, extra)])


# ---------------------------------------------------------------------------------------------
# DiffAugment.


def test_translation_is_an_integer_shift_with_zero_fill():
    x = torch.rand(32, 3, 16, 16) + 1  # strictly positive, so zero fill is visible
    out = translation(x, ratio=0.125, generator=torch.Generator().manual_seed(3))
    shifts = []
    for img, orig in zip(out, x):
        padded = torch.nn.functional.pad(orig, [2, 2, 2, 2])  # shifts of up to 2 px
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if torch.equal(img, padded[:, 2 + dy:18 + dy, 2 + dx:18 + dx])]
        assert len(matches) == 1, matches
        shifts += matches
    dys, dxs = zip(*shifts)
    assert {min(dys), max(dys), min(dxs), max(dxs)} == {-2, 2}  # the whole +-1/8 range is used
    assert sum(s != (0, 0) for s in shifts) > 16  # mostly moved


def test_cutout_zeroes_one_square_and_nothing_else():
    x = torch.rand(8, 3, 16, 16) + 1
    out = cutout(x, ratio=0.5, generator=torch.Generator().manual_seed(0))
    for img, orig in zip(out, x):
        zero = (img == 0).all(0)  # [16, 16]
        ys, xs = torch.nonzero(zero, as_tuple=True)
        assert len(ys) > 0
        box = zero[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        assert box.all() and box.shape[0] <= 8 and box.shape[1] <= 8  # one solid square, at most half the side
        assert torch.equal(img[:, ~zero], orig[:, ~zero])


def test_colour_follows_the_papers_formulas():
    from training.diffaug import color

    x = torch.rand(4, 3, 8, 8) * 2 - 1
    g = torch.Generator().manual_seed(7)
    r = torch.rand([3, 4, 1, 1, 1], generator=torch.Generator().manual_seed(7))  # the three draws, in order
    y = x + (r[0] - 0.5)  # brightness
    m = y.mean(1, keepdim=True)
    y = (y - m) * (r[1] * 2) + m  # saturation
    m = y.mean((1, 2, 3), keepdim=True)
    y = (y - m) * (r[2] + 0.5) + m  # contrast
    assert torch.allclose(color(x, generator=g), y, atol=1e-6)


def test_diffaugment_is_differentiable_and_checks_its_policy():
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    DiffAugment()(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="zoom"):
        DiffAugment("color,zoom")


# ---------------------------------------------------------------------------------------------
# The projected discriminator.


def test_projected_D_taps_torchvision_mobilenet_and_keeps_it_frozen(mobilenet_weights):
    D = ProjectedDiscriminator(32, head_channels=16, _feature_weights=mobilenet_weights)  # features at 64 px
    img = torch.rand(2, 3, 32, 32) * 2 - 1
    maps = D.project(img)
    assert [tuple(m.shape[1:]) for m in maps] == [(64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)]

    # The coarsest mixed map is the CCM of torchvision's own features[17] output.
    from torchvision.models import mobilenet_v2

    ref = mobilenet_v2(weights=None)
    ref.load_state_dict(mobilenet_weights)
    ref.eval()
    x = torch.nn.functional.interpolate(img, size=(64, 64), mode="bilinear", align_corners=False)
    x = ((x + 1) / 2 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        taps, h = [], x
        for i, block in enumerate(ref.features[:18]):
            h = block(h)
            if i in (3, 6, 13, 17):
                taps.append(h)
        # CCM per tap, then CSM top-down: each coarser mixed map upsampled, 1x1-projected, added.
        conv, up = torch.nn.functional.conv2d, torch.nn.functional.interpolate
        expect = [conv(t, getattr(D, f"ccm{i}")) for i, t in enumerate(taps)]
        for i in (2, 1, 0):
            expect[i] = expect[i] + conv(up(expect[i + 1], size=expect[i].shape[-2:], mode="bilinear",
                                            align_corners=False), getattr(D, f"csm{i}"))
        for got, want in zip(maps, expect):
            assert torch.allclose(got, want, atol=1e-4)

    # Frozen: not a parameter, not in the state dict, unchanged by an optimiser step on D.
    names = [n for n, _ in D.named_parameters()]
    assert names and all(n.startswith("heads.") for n in names)
    assert not any(k.startswith("features") for k in D.state_dict())
    before = {k: v.clone() for k, v in D.features.state_dict().items()}
    opt = torch.optim.Adam(D.parameters(), lr=0.1)
    D(img).sum().backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in D.features.state_dict().items())
    assert not D.features.training  # batch norm keeps ImageNet statistics even in train mode
    D.train()
    assert not D.features.training


def test_projected_D_gradients_reach_the_image_and_its_snapshot_round_trips(tmp_path, mobilenet_weights):
    register()
    D = ProjectedDiscriminator(16, head_channels=8, seed=5).eval()
    img = (torch.rand(3, 3, 16, 16) * 2 - 1).requires_grad_(True)
    logits = D(img)
    assert logits.shape == (3, 4)  # one logit per head
    logits.sum().backward()
    assert img.grad.abs().sum() > 0
    save_networks(tmp_path / "d.safetensors", {"D": D})
    D2 = load_networks(tmp_path / "d.safetensors")["D"]
    assert torch.equal(D2.ccm0, D.ccm0) and torch.equal(D2.csm2, D.csm2)  # the fixed projection is stored
    with torch.no_grad():
        assert torch.equal(D2(img), D(img))
    # A compact (fp16) snapshot still gives the exact float32 projection the seed draws.
    save_networks(tmp_path / "d16.safetensors", {"D": D}, dtype=torch.float16)
    D16 = load_networks(tmp_path / "d16.safetensors")["D"]
    assert torch.equal(D16.ccm3, D.ccm3) and D16.ccm3.dtype == torch.float32
    # A stored projection that is not the seed's is refused.
    bad = ProjectedDiscriminator(16, head_channels=8, seed=5)
    state = {**bad.state_dict(), "ccm0": torch.zeros_like(bad.ccm0)}
    with pytest.raises(RuntimeError, match="random projection"):
        bad.load_state_dict(state)
    # Another seed draws another projection; the same seed the same one.
    assert not torch.equal(ProjectedDiscriminator(16, seed=6).ccm0, D.ccm0)
    assert torch.equal(ProjectedDiscriminator(16, seed=5).ccm0, D.ccm0)


def test_hinge_loss_values():
    class FixedD(torch.nn.Module):
        def forward(self, img, c):  # real images are 1, fakes come out of G
            return img.mean(dim=(1, 2, 3))[:, None] * torch.tensor([1.0, 3.0])  # [N, 2]

    class ConstG(torch.nn.Module):
        z_dim, c_dim, w_dim, num_ws = 4, 0, 4, 2

        def __init__(self):
            super().__init__()
            self.v = torch.nn.Parameter(torch.tensor(-0.5))

        def mapping(self, z, c, update_emas=False):
            return z[:, None, :].expand(-1, 2, -1)

        def synthesis(self, ws, noise_mode="random"):
            return self.v.expand(ws.shape[0], 3, 4, 4)

    G, D = ConstG(), FixedD()
    loss = HingeLoss(G, D, style_mixing_prob=0.0)
    real = torch.full([2, 3, 4, 4], 0.25)
    st = loss.accumulate_gradients("Dmain", real, None, torch.randn(2, 4), None, gain=1.0)
    # fake logits (-0.5, -1.5) -> relu(1 + f) = (0.5, 0); real logits (0.25, 0.75) -> relu(1 - r) = (0.75, 0.25)
    assert st["Loss/D/loss"].item() == pytest.approx(0.25 + 0.5)
    st = loss.accumulate_gradients("Gmain", real, None, torch.randn(2, 4), None, gain=1.0)
    assert st["Loss/G/loss"].item() == pytest.approx(1.0)  # -mean(-0.5, -1.5)
    assert G.v.grad.item() == pytest.approx(-2.0)  # d/dv of -mean(v, 3v)
    assert [p for p, _, _ in loss.phases()] == ["Gmain", "Dmain"]


# ---------------------------------------------------------------------------------------------
# Recipes and the loop.


def test_recipe_sets_defaults_and_explicit_options_win(blobs, tmp_path):
    args = build_parser().parse_args(["--recipe", "fast", "--data", str(blobs), "--outdir", "x", "--glr", "0.01",
                                      "--no-mirror"])
    opts = resolve_options(args, 16)
    assert (opts.d_arch, opts.loss, opts.aug) == ("projected", "hinge", "diffaug")
    assert opts.gamma == 0 and opts.cbase == 2048 and opts.proj_res == 32
    assert opts.glr == 0.01 and opts.mirror is False  # given on the command line
    ada = resolve_options(build_parser().parse_args(["--data", str(blobs), "--outdir", "x"]), 64)
    assert (ada.d_arch, ada.loss, ada.aug) == ("stylegan2", "logistic", "ada")
    assert ada.gamma == pytest.approx(0.0002 * 64**2 / 32)


def test_resume_goes_on_with_the_runs_own_options(blobs, tmp_path, capsys):
    out = tmp_path / "run"
    train(blobs, out, 2, "--aug", "fixed:0.25", "--d-arch", "stylegan2")  # a fast-recipe run with ADA's pipe
    # resumed without --recipe fast, --aug or --d-arch: the snapshot's options still apply
    res = main(["--data", str(blobs), "--outdir", str(out), "--resume", str(out), "--kimg", "0.012"])
    opts = json.loads((out / "options.json").read_text())
    assert (opts["recipe"], opts["loss"], opts["d_arch"], opts["aug"], opts["aug_p"]) == (
        "fast", "hinge", "stylegan2", "fixed", 0.25)
    assert res["cur_nimg"] == 12 and "resume: kimg 0.008 -> 0.012" in capsys.readouterr().out
    # a learning rate given again at resume replaces the one stored with Adam's state
    main(["--data", str(blobs), "--outdir", str(out), "--resume", str(out), "--kimg", "0.016", "--glr", "0.01"])
    state = torch.load(out / "training-state-000000016.pt", weights_only=True)
    assert state["opt_G"]["param_groups"][0]["lr"] == 0.01
    # 'fixed' as options.json stores it parses again; a bad P is refused
    args = build_parser().parse_args(["--data", str(blobs), "--outdir", "x", "--aug", "fixed", "--aug-p", "0.3"])
    assert resolve_options(args, 16).aug_p == 0.3
    for bad in ("fixed:abc", "fixed:7"):
        with pytest.raises(SystemExit):
            resolve_options(build_parser().parse_args(["--data", str(blobs), "--outdir", "x", "--aug", bad]), 16)


def test_fast_recipe_trains_and_snapshots_hold_only_trainable_parts(blobs, tmp_path):
    out = tmp_path / "run"
    start = train(blobs, tmp_path / "init", 0)
    end = train(blobs, out, 6)
    reals = torch.stack([ImageArchive(blobs)[i][0] for i in range(16)]).float() / 127.5 - 1
    z = torch.randn(16, end["G"].z_dim, generator=torch.Generator().manual_seed(1))

    def gap(run):
        with torch.no_grad():
            return (run["D"](reals).mean() - run["D"](run["G"](z, None)).mean()).item()

    assert gap(end) > gap(start) + 0.5  # D learned to tell the blobs from G's samples
    snap = Path(end["snapshots"][-1])
    header = read_header(snap)
    assert header["networks"]["D"]["class"] == "ProjectedDiscriminator"
    from safetensors import safe_open

    with safe_open(snap, "pt") as f:
        keys = list(f.keys())
    assert not any(k.startswith("D.features") for k in keys) and any(k.startswith("D.heads.") for k in keys)
    records = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 6 and "train_time_s" in records[-1]
    assert json.loads((out / "options.json").read_text())["recipe"] == "fast"


def test_fast_recipe_resumes_exactly_and_compact_snapshots_resume_closely(blobs, tmp_path):
    a = train(blobs, tmp_path / "straight", 4)
    train(blobs, tmp_path / "resumed", 2)
    b = train(blobs, tmp_path / "resumed", 4, "--resume", tmp_path / "resumed")
    for name in ("G", "D", "G_ema"):
        sa, sb = a[name].state_dict(), b[name].state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name

    train(blobs, tmp_path / "compact", 2, "--snap-dtype", "fp16")
    c = train(blobs, tmp_path / "compact", 4, "--snap-dtype", "fp16", "--resume", tmp_path / "compact")
    snaps = sorted((tmp_path / "compact").glob("network-snapshot-*.safetensors"))
    full = sorted((tmp_path / "resumed").glob("network-snapshot-*.safetensors"))
    assert snaps[0].stat().st_size < 0.6 * full[0].stat().st_size
    state = torch.load(sorted((tmp_path / "compact").glob("training-state-*.pt"))[0], weights_only=True)
    assert any(t.dtype == torch.bfloat16 for v in state["opt_G"]["state"].values() for t in v.values()
               if torch.is_tensor(t) and t.ndim)
    # fp16 weights and bf16 moments: samples close to the exact run's, not identical (another seed's run
    # differs by ~5)
    z = torch.randn(4, a["G"].z_dim)
    with torch.no_grad():
        diff = (a["G_ema"](z, None) - c["G_ema"](z, None)).abs().max().item()
    assert 0 < diff < 0.1


def test_resume_pack_round_trip(blobs, tmp_path):
    from training.resume_pack import MAX_FILE_BYTES, pack, unpack

    a = train(blobs, tmp_path / "straight", 4)
    train(blobs, tmp_path / "first", 2)
    doc = pack(tmp_path / "first", tmp_path / "pack")
    assert doc["kimg"] == 0.008 and doc["options"]["recipe"] == "fast"
    files = sorted(p.name for p in (tmp_path / "pack").iterdir())
    assert "G.safetensors" in files and "opt_G.exp_avg_sq.safetensors" in files and "state.pt" in files
    assert all((tmp_path / "pack" / f).stat().st_size <= MAX_FILE_BYTES for f in files)
    snap = unpack(tmp_path / "pack", tmp_path / "second")
    assert snap.name == "network-snapshot-000000008.safetensors"
    b = train(blobs, tmp_path / "second", 4, "--resume", tmp_path / "second")
    assert b["cur_nimg"] == a["cur_nimg"] and b["batch_idx"] == 4
    z = torch.randn(4, a["G"].z_dim)
    with torch.no_grad():
        diff = (a["G_ema"](z, None) - b["G_ema"](z, None)).abs().max().item()
    assert diff < 0.1  # the same run, up to fp16 weights and bf16 moments (another seed: ~5)


def test_pack_refuses_to_overwrite_the_run_or_other_folders(blobs, tmp_path):
    from training.resume_pack import pack

    train(blobs, tmp_path / "run", 1)
    with pytest.raises(SystemExit, match="holds the run"):
        pack(tmp_path / "run", tmp_path)
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep")
    with pytest.raises(SystemExit, match="not a resume pack"):
        pack(tmp_path / "run", tmp_path / "precious")
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep"
    assert (tmp_path / "run" / "network-snapshot-000000004.safetensors").exists()


def test_minutes_limit_and_snapshot_pruning(blobs, tmp_path):
    out = tmp_path / "run"
    res = train(blobs, out, 1000, "--minutes", "0.01", "--snap-kimg", "0.004", "--keep-snaps", "2")
    steps = res["batch_idx"]
    assert 0 < steps < 1000 and res["cur_nimg"] == 4 * steps  # stopped by the clock, not by --kimg
    kept = sorted(out.glob("network-snapshot-*.safetensors"))
    assert len(kept) == min(2, steps) and kept[-1].name == f"network-snapshot-{4 * steps:09d}.safetensors"
    assert len(list(out.glob("training-state-*.pt"))) == len(kept)
    # Resuming a run that has used up its minutes trains no further step.
    again = main(["--data", str(blobs), "--outdir", str(out), "--resume", str(out)])
    assert again["batch_idx"] == steps and again["snapshots"] == []


# ---------------------------------------------------------------------------------------------
# The quality measure.


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    fd = frechet_distance(mu1, np.diag(s1**2), mu2, np.diag(s2**2))
    assert fd == pytest.approx(np.square(mu1 - mu2).sum() + np.square(s1 - s2).sum(), rel=1e-6)
    x = rng.normal(size=(500, 4))
    assert frechet_distance(*gaussian(x), *gaussian(x)) == pytest.approx(0, abs=1e-6)


def test_face_quality_refuses_held_out_photos_inside_the_training_archive(tmp_path):
    src = tmp_path / "src.zip"
    with zipfile.ZipFile(src, "w") as zf:
        for n in ("a.jpg", "b.jpg"):
            buf = io.BytesIO()
            Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(buf, format="PNG")
            zf.writestr(n, buf.getvalue())
    prep.main(["--source", str(src), "--dest", str(tmp_path / "train.zip"), "--resolution", "16", "--aligned"])
    (tmp_path / "held.txt").write_text("b.jpg\n")
    with pytest.raises(ValueError, match="--exclude"):
        FaceQuality.for_archive(ImageArchive(tmp_path / "train.zip"), src, tmp_path / "held.txt", num_fake=1)


def test_face_quality_on_real_faces_and_noise():
    from faceapp.align import align_face as align
    from faceapp.align import detect_faces, load_image, utkface_spec

    photo = load_image(REPO / "tests" / "data" / "astronaut.jpg")
    crop = np.asarray(align(photo, detect_faces(photo)[0], utkface_spec(200)).image)  # [200, 200, 3]
    faces = np.stack([crop, crop[:, ::-1]] * 4)  # 8 "real" faces (the crop and its mirror image)
    noise = (np.random.default_rng(0).uniform(0, 255, size=(8, 64, 64, 3))).astype(np.uint8)
    q = FaceQuality(64, faces, faces, num_fake=8)
    assert q.hog_real == 1.0  # HOG finds the face at 64 px, brought to 200 px
    assert q.fd_floor == pytest.approx(0, abs=1e-5)  # the same faces on both sides
    noise_t = torch.from_numpy(noise).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert q.hog_share(noise_t) == 0.0

    class Replay(torch.nn.Module):  # a "generator" that returns given images
        z_dim = 4

        def __init__(self, images):
            super().__init__()
            self.images = images
            self.p = torch.nn.Parameter(torch.zeros(()))

        def forward(self, z, c, truncation_psi=1, noise_mode="const"):
            return self.images[: len(z)]

    faces_t = torch.from_numpy(faces.copy()).permute(0, 3, 1, 2).float() / 127.5 - 1
    good = q.evaluate(Replay(torch.nn.functional.interpolate(faces_t, size=64, mode="area")))
    bad = q.evaluate(Replay(noise_t))
    assert good["hog_share"] == 1.0 and bad["hog_share"] == 0.0
    assert good["fd_dlib"] < 0.1 * bad["fd_dlib"], (good, bad)


# ---------------------------------------------------------------------------------------------
# prepare_dataset on crops that are already aligned.


def test_prepare_aligned_resizes_without_detection_and_leaves_out_held_out_names(tmp_path, monkeypatch):
    src = tmp_path / "src.zip"
    rng = np.random.default_rng(0)
    names = ["20_0_0_1.jpg.chip.jpg", "30_1_2_2.jpg.chip.jpg", "40_0_1_3 x.jpg.chip.jpg"]
    with zipfile.ZipFile(src, "w") as zf:
        for n in names:
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(buf, format="PNG")
            zf.writestr("UTKFace/" + n, buf.getvalue())
    held = tmp_path / "held.txt"
    held.write_text(names[2] + "\n")  # a name with a space: one name per line

    def no_detection(*a, **k):
        raise AssertionError("--aligned must not detect")

    monkeypatch.setattr(prep, "detect_faces", no_detection)
    summary = prep.main(["--source", str(src), "--dest", str(tmp_path / "out.zip"), "--resolution", "32",
                         "--aligned", "--exclude", str(held)])
    assert summary["images"] == 2 and summary["failures"] == 0
    ds = ImageArchive(tmp_path / "out.zip")
    assert [ds.attributes[n]["source"] for n in ds.names] == ["UTKFace/" + n for n in names[:2]]
    with zipfile.ZipFile(src) as zf:
        original = Image.open(__import__("io").BytesIO(zf.read("UTKFace/" + names[0]))).convert("RGB")
    expected = np.asarray(original.resize((32, 32), Image.Resampling.BOX))
    assert np.array_equal(ds[0][0].permute(1, 2, 0).numpy(), expected)


# ---------------------------------------------------------------------------------------------
# Shipping a run as the demo bundle.


def test_export_demo_writes_a_loadable_fp16_bundle_with_its_measured_card(blobs, tmp_path):
    from safetensors import safe_open

    from faceapp.bundle import load_bundle
    from training.export_demo import export

    run = tmp_path / "run"
    summary = train(blobs, run, 2)
    src = _held_out_photos(tmp_path, seed=1)
    figs = export(str(run), str(tmp_path / "demo"), str(src), str(tmp_path / "img"), str(tmp_path / "held.txt"),
                  data=str(blobs), num_fake=4)
    bundle = load_bundle(tmp_path / "demo")
    assert bundle.resolution == 16 and bundle.align_spec.kind == "template" and bundle.encoder is None
    with safe_open(tmp_path / "demo" / "generator.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    z = torch.randn(2, bundle.G.z_dim)
    with torch.no_grad():
        assert (bundle.G(z, None) - summary["G_ema"](z, None)).abs().max() < 0.02
    card = (tmp_path / "demo" / "MODEL_CARD.md").read_text()
    assert "Non-commercial research use only" in card and "--recipe fast" in card
    assert f"{figs['fd_dlib']:.4f}" in card and f"{figs['fd_floor']:.4f}" in card and "4 held-out" in card
    assert Image.open(tmp_path / "img" / "demo-samples.png").size == (128, 128)  # 8 x 8 samples of 16 px
    assert Image.open(tmp_path / "img" / "demo-truncation.png").size == (80, 128)  # 5 psi x 8 seeds
    assert json.loads((tmp_path / "demo" / "figures.json").read_text())["kimg"] == figs["kimg"] == 0.008


def test_export_demo_ships_an_encoder_and_directions_made_for_its_generator(blobs, tmp_path):
    from safetensors import safe_open

    from faceapp.bundle import load_bundle
    from faceapp.edits import Direction, DirectionSet
    from training.export_demo import export
    from training.train_encoder import main as train_encoder

    run = tmp_path / "run"
    summary = train(blobs, run, 2)
    snap = sorted(run.glob("network-snapshot-*.safetensors"))[-1]
    enc = train_encoder(["--cpu-smoke", "--generator", str(snap), "--outdir", str(tmp_path / "enc"), "--steps", "3",
                         "--enc-resolution", "32"])
    G = summary["G_ema"]
    rng = np.random.default_rng(0)
    age = rng.normal(size=G.w_dim).astype(np.float32)
    smile = rng.normal(size=G.w_dim).astype(np.float32)
    DirectionSet([Direction("age", age / np.linalg.norm(age), scale=2.0, source="learned:true-labels:utk.zip"),
                  Direction("smile", smile / np.linalg.norm(smile), source="learned:interfacegan-svm")]
                 ).save(tmp_path / "dirs")
    src = _held_out_photos(tmp_path, seed=1)
    export(str(run), str(tmp_path / "demo"), str(src), str(tmp_path / "img"), str(tmp_path / "held.txt"),
           data=str(blobs), num_fake=4, encoder=enc["snapshots"][-1], directions=str(tmp_path / "dirs"))
    bundle = load_bundle(tmp_path / "demo")
    assert bundle.encoder is not None and list(bundle.directions) == ["age", "smile"]
    files = {p.name for p in (tmp_path / "demo").rglob("*.safetensors")}
    assert "encoder.safetensors" in files
    with safe_open(tmp_path / "demo" / "encoder.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys() if f.get_tensor(k).is_floating_point()} == {torch.float16}
    img = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():  # the shipped encoder is the trained one, up to fp16
        assert (bundle.encoder(img) - enc["E"].eval()(img)).abs().max() < 0.05
    assert np.allclose(bundle.directions["age"].vector, age / np.linalg.norm(age), atol=1e-3)
    card = (tmp_path / "demo" / "MODEL_CARD.md").read_text()
    assert "| encoder | e4e-style encoder" in card and "3 steps of batch 4" in card
    assert "age: true UTKFace labels of encoded real faces; smile: labelers on the generator's samples" in card
    assert card.index("| edit directions |") < card.index("## Quality")


def test_quality_measure_during_training_and_its_plot(blobs, tmp_path):
    from training.plot_stats import main as plot_main
    from training.plot_stats import read_quality

    src = _held_out_photos(tmp_path, seed=2)
    out = tmp_path / "run"
    train(blobs, out, 4, "--quality-source", src, "--quality-heldout", tmp_path / "held.txt", "--quality-num", "4",
          "--quality-kimg", "0.008", "--quality-psi", "0.7,1")
    recs = read_quality(out)
    assert [r["kimg"] for r in recs] == [0.008, 0.016]
    for r in recs:  # both psi values, the real side untagged whatever the order
        assert {"Quality/fd_dlib", "Quality/fd_dlib_psi0.7", "Quality/hog_share_psi0.7", "Quality/spread",
                "Quality/mean_dist", "Quality/fd_floor", "Quality/hog_real"} <= r.keys()
        assert r["Quality/fd_dlib"] >= 0 and 0 <= r["Quality/hog_share"] <= 1 and r["train_time_s"] > 0
    assert (out / "quality-reference.npz").is_file()
    plot_main([str(out), "--out", str(tmp_path / "plot.png")])
    plot_main([str(out / "stats.jsonl"), "--psi", "0.7", "--out", str(tmp_path / "plot07.png")])
    assert Image.open(tmp_path / "plot.png").size[0] > 500 and (tmp_path / "plot07.png").is_file()


# ---------------------------------------------------------------------------------------------
# The heads' minibatch-std feature (against mode hopping) and the measure's age / gender shares.


def test_minibatch_std_matches_a_loop_over_groups():
    h = torch.randn(12, 5, 4, 4, generator=torch.Generator().manual_seed(0))
    out = minibatch_std(h, 4)  # 12 images, groups of 4: image i in group i mod 3
    assert out.shape == (12, 5)
    for i in range(12):
        members = h[i % 3::3]  # [4, 5, 4, 4]
        want = members.std(dim=0, unbiased=False).mean(dim=(1, 2))
        assert torch.allclose(out[i], want, atol=1e-4), i
    # a batch that the group size does not divide uses the largest divisor (here 3 of 9)
    odd = minibatch_std(h[:9], 4)
    assert torch.allclose(odd[0], h[:9][0::3].std(dim=0, unbiased=False).mean(dim=(1, 2)), atol=1e-4)
    assert torch.count_nonzero(minibatch_std(h[:1], 4) > 1e-3) == 0  # one image alone: no spread


def test_head_sees_the_batch_only_through_the_feature():
    torch.manual_seed(0)
    plain, with_std = Head(8, 8, 16), Head(8, 8, 16, mbstd_group=4)
    with_std.load_state_dict(plain.state_dict())  # a head trained without the feature: its weight starts at 0
    x = torch.randn(8, 8, 8, 8)
    with torch.no_grad():
        assert torch.equal(plain.eval()(x), with_std.eval()(x))
        with_std.mbstd_fc.weight.fill_(1.0)
        twins = with_std(x[:1].repeat(8, 1, 1, 1))  # a batch of look-alikes
        varied = with_std(x)
        # image 0's logit changes with the others in its group, and look-alikes score lower than a varied batch
        swapped = with_std(torch.cat([x[:1], x[1:2], x[3:4], x[2:3], x[4:]]))  # 2 <-> 3: image 0's group is {0,2,4,6}
    assert twins[0].item() < varied[0].item()
    assert not torch.allclose(swapped[0], varied[0])
    plain_twins = plain(x[:1].repeat(8, 1, 1, 1))
    assert torch.allclose(plain_twins[0], plain(x[:1])[0], atol=1e-6)  # without it, each image is judged alone


def test_projected_D_with_the_feature_round_trips_and_upgrades_an_older_snapshot(tmp_path):
    register()
    old = ProjectedDiscriminator(16, head_channels=8, seed=3).eval()
    assert "mbstd_group" not in old.init_kwargs  # snapshots made before the option keep their kwargs
    new = ProjectedDiscriminator(16, head_channels=8, seed=3, mbstd_group=2)
    new.load_state_dict(old.state_dict())
    img = torch.rand(4, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(new.eval()(img), old(img))
        for head in new.heads:
            head.mbstd_fc.weight.normal_()
        save_networks(tmp_path / "d.safetensors", {"D": new})
        back = load_networks(tmp_path / "d.safetensors")["D"]
        assert back.init_kwargs["mbstd_group"] == 2 and torch.equal(back(img), new(img))
        assert not torch.allclose(back(img), old(img))


def test_resume_adds_the_feature_to_a_run_made_without_it(blobs, tmp_path, capsys):
    register()
    out = tmp_path / "run"
    common = ["--cpu-smoke", "--recipe", "fast", "--data", str(blobs), "--outdir", str(out), "--grid", "2"]
    main([*common, "--kimg", "0.008", "--proj-mbstd", "0"])
    before = load_networks(out / "network-snapshot-000000008.safetensors")["D"]
    assert not hasattr(before.heads[0], "mbstd_fc")
    capsys.readouterr()
    main(["--data", str(blobs), "--outdir", str(out), "--resume", str(out), "--kimg", "0.016", "--proj-mbstd", "2"])
    log = capsys.readouterr().out
    assert "resume: proj_mbstd 0 -> 2" in log and "D's optimiser state starts afresh" in log
    after = load_networks(out / "network-snapshot-000000016.safetensors")["D"]
    assert after.init_kwargs["mbstd_group"] == 2
    assert any(h.mbstd_fc.weight.abs().sum() > 0 for h in after.heads)  # trained from its zero start
    assert json.loads((out / "options.json").read_text())["proj_mbstd"] == 2
    # resumed again without the flag: the run keeps it
    main(["--data", str(blobs), "--outdir", str(out), "--resume", str(out), "--kimg", "0.020"])
    assert load_networks(out / "network-snapshot-000000020.safetensors")["D"].init_kwargs["mbstd_group"] == 2


def _toy_labeler(rng) -> AgeGenderModel:
    """An AgeGenderModel fitted on random descriptors: age rises with descriptor 0, gender is descriptor 1's sign."""
    desc = rng.normal(size=(400, 128)) * 0.01
    desc[:, :2] = rng.uniform(-1, 1, size=(400, 2))
    ages = np.clip(40 + 50 * desc[:, 0], 1, 100)
    return AgeGenderModel.fit(desc, ages, (desc[:, 1] > 0).astype(int), k=5)


def test_quality_reports_age_and_gender_shares_beside_the_real_ones(blobs, tmp_path):
    from training.plot_stats import read_quality

    labeler = _toy_labeler(np.random.default_rng(0))
    labeler.save(tmp_path / "ag.safetensors")
    src = _held_out_photos(tmp_path, seed=4)
    out = tmp_path / "run"
    main(["--cpu-smoke", "--recipe", "fast", "--data", str(blobs), "--outdir", str(out), "--grid", "2",
          "--kimg", "0.008", "--quality-source", str(src), "--quality-heldout", str(tmp_path / "held.txt"),
          "--quality-num", "4", "--quality-kimg", "0.008", "--quality-psi", "1,0.7",
          "--quality-labeler", str(tmp_path / "ag.safetensors")])
    rec = read_quality(out)[-1]
    for k in ("female", "age60", "age_u15"):
        assert 0 <= rec[f"Quality/{k}"] <= 1 and 0 <= rec[f"Quality/{k}_psi0.7"] <= 1
        assert f"Quality/{k}_real_psi0.7" not in rec  # the real side is untagged
    # the real side is the labeler on the cached held-out descriptors
    with np.load(out / "quality-reference.npz") as f:
        real_desc = f["real_desc"]
    assert real_desc.shape == (4, 128)
    q = FaceQuality(16, None, None, reference={"real_mu": 0, "real_sigma": 0, "fd_floor": 0, "hog_real": 0},
                    labeler=labeler)
    want = q.attributes(real_desc)
    assert rec["Quality/female_real"] == pytest.approx(want["female"])
    assert rec["Quality/age_mean_real"] == pytest.approx(want["age_mean"])
    # and the shares follow the labeler: descriptors it reads as old and female count as such
    old_women = np.zeros((10, 128))
    old_women[:, 0], old_women[:, 1] = 0.9, 0.3
    assert q.attributes(old_women)["age60"] == 1.0 and q.attributes(old_women)["female"] == 1.0
    assert q.attributes(-old_women)["female"] == 0.0 and q.attributes(-old_women)["age_u15"] == 1.0


# ---------------------------------------------------------------------------------------------
# Age-balanced sampling (--balance-age).
def _with_ages(src: Path, dst: Path, ages) -> Path:
    """A copy of archive `src` whose dataset.json gives image i the age ages[i] (None: no age)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        names = sorted(n for n in zin.namelist() if n.endswith(".png"))
        for n in names:
            zout.writestr(n, zin.read(n))
        attrs = [[n, {} if a is None else {"age": a}] for n, a in zip(names, ages)]
        zout.writestr("dataset.json", json.dumps({"labels": None, "attributes": attrs}))
    return dst


def test_age_balance_weights_draw_bins_in_proportion_to_count_to_the_one_minus_alpha():
    from training.dataset import AGE_BINS, age_balance_weights

    rng = np.random.default_rng(0)
    ages = np.concatenate([rng.integers(20, 30, 600), rng.integers(60, 70, 100), rng.integers(0, 3, 50)])
    ages = ages.astype(float)
    assert np.allclose(age_balance_weights(ages, 0.0), 1.0)
    for alpha in (0.5, 1.0):
        w = age_balance_weights(ages, alpha)
        assert w.mean() == pytest.approx(1.0)
        counts = np.array([600, 100, 50], dtype=float)
        want = counts ** (1 - alpha) / (counts ** (1 - alpha)).sum()
        got = np.array([w[ages < 3].sum(), w[(ages >= 20) & (ages < 30)].sum(), w[ages >= 60].sum()])
        got = got[[1, 2, 0]] / w.sum()
        assert np.allclose(got, want)
    assert len(AGE_BINS) == 9
    # Items without an age keep their share; an archive with no ages at all is refused.
    with_nan = np.concatenate([ages, [np.nan] * 250])
    w = age_balance_weights(with_nan, 1.0)
    assert w[np.isnan(with_nan)].sum() / w.sum() == pytest.approx(0.25)
    from training.dataset import DatasetError

    with pytest.raises(DatasetError, match="no image has an age"):
        age_balance_weights(np.full(5, np.nan), 0.5)


def test_weighted_sampler_follows_the_weights_and_resumes_mid_epoch(blobs, tmp_path):
    from training.dataset import age_balance_weights
    from training.runtime import ResumableSampler

    ages = [70] * 4 + [25] * 28  # 4 old images among 32
    data = ImageArchive(_with_ages(blobs, tmp_path / "aged.zip", ages), xflip=True)
    got = data.ages()
    assert got.shape == (64,) and np.array_equal(got[:32], got[32:])  # mirrored copies share the age
    w = age_balance_weights(got, 1.0)
    s = ResumableSampler(data, num_replicas=1, rank=0, seed=3, weights=w)
    draws = []
    for epoch in range(40):
        s.set_epoch(epoch)
        draws += list(s)
    draws = np.array(draws)
    old = np.isin(draws % 32, np.arange(4))
    assert abs(old.mean() - 0.5) < 0.05  # balanced: half old, against 1/8 in the data
    s.set_epoch(7)
    epoch7 = list(s)
    s.skip = 10
    assert list(s) == epoch7[10:] and len(s) == len(epoch7) - 10
    s.skip = 0
    s.set_epoch(8)
    assert list(s) != epoch7
    # Two ranks split one epoch's draws between them.
    r0, r1 = (ResumableSampler(data, num_replicas=2, rank=r, seed=3, weights=w) for r in (0, 1))
    for r in (r0, r1):
        r.set_epoch(7)
    assert sorted(list(r0) + list(r1)) == sorted(epoch7)


def test_balance_age_trains_resumes_exactly_and_needs_ages(blobs, tmp_path):
    aged = _with_ages(blobs, tmp_path / "aged.zip", [70] * 4 + [None] * 2 + [25] * 26)
    a = train(aged, tmp_path / "straight", 4, "--balance-age", 0.5)
    train(aged, tmp_path / "resumed", 2, "--balance-age", 0.5)
    b = train(aged, tmp_path / "resumed", 4, "--resume", tmp_path / "resumed")
    assert json.loads((tmp_path / "resumed" / "options.json").read_text())["balance_age"] == 0.5
    for name in ("G", "D"):
        sa, sb = a[name].state_dict(), b[name].state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name
    plain = train(aged, tmp_path / "plain", 4)
    assert not all(torch.equal(plain["G"].state_dict()[k], v) for k, v in a["G"].state_dict().items())
    with pytest.raises(Exception, match="no image has an age"):
        train(blobs, tmp_path / "no-ages", 2, "--balance-age", 0.5)


def test_grown_generator_renders_the_small_ones_image_upsampled_then_learns_detail():
    from faceapp.cuda import upfirdn2d
    from faceapp.stylegan import Generator
    from training.train_generator import extend_ws, grow_generator

    torch.manual_seed(0)
    G = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
                  synthesis_kwargs=dict(channel_base=256, channel_max=32)).eval()
    big = grow_generator(G, 64).eval()
    assert (big.img_resolution, big.num_ws) == (64, G.num_ws + 4)
    with torch.no_grad():
        ws = G.mapping(torch.randn(3, 16), None)  # [3, num_ws, 16]
        small = G.synthesis(ws, noise_mode="const")  # [3, 3, 16, 16]
        out = big.synthesis(extend_ws(ws, big.num_ws), noise_mode="const")  # [3, 3, 64, 64]
    f = big.synthesis.b32.resample_filter
    want = upfirdn2d.upsample2d(upfirdn2d.upsample2d(small, f), f)
    assert out.shape == (3, 3, 64, 64) and torch.allclose(out, want, atol=1e-5)
    # the shared layers are copies, not views: training the grown G leaves the small one alone
    before = G.synthesis.b16.conv1.weight.clone()
    big.synthesis.b16.conv1.weight.data.add_(1.0)
    assert torch.equal(G.synthesis.b16.conv1.weight, before)
    # and the new blocks take part once their toRGB moves off zero
    big.synthesis.b64.torgb.weight.data.normal_()
    with torch.no_grad():
        assert not torch.allclose(big.synthesis(extend_ws(ws, big.num_ws), noise_mode="const"), want, atol=1e-3)
    for bad in (24, 16, 8):
        with pytest.raises(ValueError, match="cannot grow"):
            grow_generator(G, bad)
    with pytest.raises(ValueError, match="do not fit"):
        extend_ws(torch.zeros(1, big.num_ws + 1, 16), big.num_ws)


GROW_COMMON = ["--cpu-smoke", "--recipe", "fast", "--grid", "2", "--proj-res", "32"]


def _small_run_and_data32(blobs, tmp_path):
    """(snapshot of an 8-image 16 px run, a 32 px archive) for the growing tests."""
    register()
    main([*GROW_COMMON, "--data", str(blobs), "--outdir", str(tmp_path / "small"), "--kimg", "0.008"])
    data32 = write_synthetic_archive(tmp_path / "blobs32.zip", num_images=32, resolution=32, seed=1)
    return tmp_path / "small" / "network-snapshot-000000008.safetensors", data32


def test_init_from_a_smaller_run_grows_it_and_keeps_the_projected_D(blobs, tmp_path, capsys):
    from training.train_generator import initial_networks

    snap, data32 = _small_run_and_data32(blobs, tmp_path)
    common = GROW_COMMON
    nets = load_networks(snap)
    capsys.readouterr()
    big = tmp_path / "big"
    main([*common, "--data", str(data32), "--outdir", str(big), "--init", str(snap), "--kimg", "0.008"])
    log = capsys.readouterr().out
    assert "growing" in log and "b32" in log and "D: " in log
    grown = load_networks(big / "network-snapshot-000000008.safetensors")
    assert grown["G"].img_resolution == 32 and grown["G_ema"].num_ws == nets["G"].num_ws + 2
    # the run starts from the small run's D itself, not a fresh one
    opts = resolve_options(build_parser().parse_args([*common, "--data", str(data32), "--outdir", str(big)]), 32)
    _, D, _ = initial_networks(opts, ImageArchive(data32), snap)
    a, b = nets["D"].state_dict(), D.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # a checkpoint that does not divide the data's resolution is refused as before
    data24 = write_synthetic_archive(tmp_path / "blobs24.zip", num_images=32, resolution=24, seed=1)
    with pytest.raises(SystemExit, match="16px"):
        main([*common, "--data", str(data24), "--outdir", str(tmp_path / "bad"), "--init", str(snap),
              "--kimg", "0.008"])


def test_freeze_below_trains_only_the_new_blocks_and_keeps_the_small_gs_codes(blobs, tmp_path, capsys):
    snap, data32 = _small_run_and_data32(blobs, tmp_path)
    common = GROW_COMMON
    before = load_networks(snap)["G_ema"]
    capsys.readouterr()
    main([*common, "--data", str(data32), "--outdir", str(tmp_path / "big"), "--init", str(snap), "--kimg", "0.016",
          "--freeze-below", "32", "--glr", "0.01"])
    assert "frozen: G's mapping and blocks below 32 px" in capsys.readouterr().out
    nets = load_networks(tmp_path / "big" / "network-snapshot-000000016.safetensors")
    old = dict(before.named_parameters())  # (w_avg, a buffer, goes on tracking the frozen mapping's mean)
    for key in ("G", "G_ema"):
        after = dict(nets[key].named_parameters())
        assert old.keys() <= after.keys()
        for name, v in old.items():  # every parameter the small G has: mapping, b4, b8, b16
            assert torch.equal(after[name], v), (key, name)  # exactly the small G_ema's
        assert after["synthesis.b32.torgb.weight"].abs().sum() > 0  # the new block learned (from zero)
    with pytest.raises(SystemExit, match="--freeze-below 48"):
        main([*common, "--data", str(data32), "--outdir", str(tmp_path / "bad"), "--freeze-below", "48"])
