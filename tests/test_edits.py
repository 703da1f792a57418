"""faceapp.edits: orthogonalisation maths, applying edits, timelines, storage and importers."""

import json
import os
import pickle

import numpy as np
import pytest
import torch

from faceapp.edits import (
    Direction,
    DirectionSet,
    apply_edits,
    conditional_direction,
    direction_scale,
    from_e4e_pt,
    from_ganspace,
    from_interfacegan_npy,
    interfacegan_name,
    project_out,
    timeline,
    to_e4e_pt,
    to_interfacegan_npy,
)
from faceapp.errors import CheckpointError, FaceAppError, UnsafeCheckpointError

W_DIM, NUM_WS = 32, 8


def rand_dirs(names, seed=0, w_dim=W_DIM, correlated=True):
    """Unit directions that are far from orthogonal (a shared component), as real attribute normals are."""
    rng = np.random.default_rng(seed)
    common = rng.normal(size=w_dim)
    return [Direction(n, rng.normal(size=w_dim) + (1.5 * common if correlated else 0)) for n in names]


def gram_schmidt_reference(n, conditions):
    """Independent reference: orthonormal basis of the conditions by QR, then subtract."""
    q, _ = np.linalg.qr(np.stack(conditions, axis=1))
    return n - q @ (q.T @ n)


# ------------------------------------------------------------------------- maths


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_conditional_direction_is_orthogonal_to_every_condition(k):
    primal, *conds = rand_dirs(["p"] + [f"c{i}" for i in range(k)], seed=k)
    assert all(abs(primal.vector @ c.vector) > 0.2 for c in conds)  # the test means something
    out = conditional_direction(primal, conds)
    v = out.vector.astype(np.float64)
    assert abs(np.linalg.norm(v) - 1) < 1e-6
    for c in conds:
        assert abs(v @ c.vector) < 1e-6
    ref = gram_schmidt_reference(primal.vector.astype(np.float64), [c.vector.astype(np.float64) for c in conds])
    np.testing.assert_allclose(v, ref / np.linalg.norm(ref), atol=1e-6)
    assert v @ primal.vector > 0  # still points the same way
    assert out.name == "p" and out.scale == primal.scale


def test_project_out_closed_forms_match_least_squares():
    rng = np.random.default_rng(3)
    n = rng.normal(size=16)
    c1, c2 = rng.normal(size=16), rng.normal(size=16)
    one = project_out(n, [c1])
    np.testing.assert_allclose(one, n - (n @ c1) / (c1 @ c1) * c1, atol=1e-12)
    two = project_out(n, [c1, c2])
    np.testing.assert_allclose(two, gram_schmidt_reference(n, [c1, c2]), atol=1e-12)
    # parallel conditions: the 2x2 system is singular, least squares still projects out their line
    par = project_out(n, [c1, 2 * c1])
    np.testing.assert_allclose(par, one, atol=1e-10)


def test_held_linear_classifier_scores_do_not_move():
    """Moving along the conditional direction leaves every held attribute's linear score unchanged."""
    names = ["age", "gender", "glasses", "smile"]
    dirs = rand_dirs(names, seed=7)
    ds = DirectionSet([d.replace(scale=s) for d, s in zip(dirs, [2.0, 1.5, 0.7, 1.1])])
    rng = np.random.default_rng(1)
    bias = rng.normal(size=4)
    ws = torch.as_tensor(rng.normal(size=(5, NUM_WS, W_DIM)), dtype=torch.float64)

    def scores(x):  # [N, 4] linear classifier scores on layer 0 (all layers move alike)
        return x[:, 0].numpy() @ np.stack([d.vector for d in dirs]).T.astype(np.float64) + bias

    edited = apply_edits(ws, ds, {"age": 3.0}, hold=["gender", "glasses"])
    before, after = scores(ws), scores(edited)
    np.testing.assert_allclose(after[:, 1:3], before[:, 1:3], atol=1e-6)
    assert np.all(after[:, 0] - before[:, 0] > 0.5 * 3.0 * 2.0 * 0.3)  # age moved, clearly
    # without holding, gender would have moved too (the directions are correlated)
    free = scores(apply_edits(ws, ds, {"age": 3.0}))
    assert np.abs(free[:, 1] - before[:, 1]).min() > 0.1


def test_per_layer_directions_orthogonalise_per_layer():
    rng = np.random.default_rng(5)
    primal = Direction("p", rng.normal(size=(NUM_WS, W_DIM)))
    held_w = Direction("g", rng.normal(size=W_DIM), layers=(2, 6))
    held_l = Direction("h", rng.normal(size=(NUM_WS, W_DIM)))
    out = conditional_direction(primal, [held_w, held_l])
    assert out.vector.shape == (NUM_WS, W_DIM)
    v = out.vector.astype(np.float64)
    for layer in range(NUM_WS):
        assert abs(v[layer] @ held_l.vector[layer]) < 1e-6
        if 2 <= layer < 6:
            assert abs(v[layer] @ held_w.vector) < 1e-6
    # outside the held W direction's layers the primal only loses the per-layer component
    assert abs(v[0] @ held_w.vector) > 1e-3


def test_disjoint_layer_ranges_need_no_projection_and_degenerate_hold_is_an_error():
    a, b = rand_dirs(["a", "b"], seed=2)
    a, b = a.replace(layers=(0, 4)), b.replace(layers=(4, 8))
    assert conditional_direction(a, [b]) is a
    same = Direction("twin", -2 * a.vector)
    with pytest.raises(FaceAppError, match="lies in their span"):
        conditional_direction(a, [same])


# ------------------------------------------------------------------------- applying


def test_zero_strength_is_the_identity_and_strength_is_linear_in_scale_units():
    ds = DirectionSet([d.replace(scale=3.0) for d in rand_dirs(["age", "smile"], seed=4)])
    ws = torch.randn(3, NUM_WS, W_DIM)
    out = apply_edits(ws, ds, {"age": 0.0, "smile": 0})
    assert torch.equal(out, ws) and out is not ws
    assert torch.equal(apply_edits(ws, ds, {}, hold=["age"]), ws)
    one = apply_edits(ws, ds, {"age": 1.0}) - ws
    np.testing.assert_allclose(one.norm(dim=2).numpy(), 3.0, rtol=1e-5)  # one unit = scale in W units
    two = apply_edits(ws, ds, {"age": 2.0, "smile": -1.0}) - ws
    expect = 2 * one + (apply_edits(ws, ds, {"smile": -1.0}) - ws)
    torch.testing.assert_close(two, expect, rtol=1e-5, atol=1e-5)


def test_layer_range_only_touches_its_layers_and_keeps_dtype_device():
    (d,) = rand_dirs(["pose"], seed=8)
    ds = DirectionSet([d.replace(layers=(0, 3))])
    ws = torch.randn(2, NUM_WS, W_DIM, dtype=torch.float64)
    out = apply_edits(ws, ds, {"pose": 2.0})
    assert out.dtype == torch.float64 and out.device == ws.device
    changed = (out - ws).abs().amax(dim=(0, 2)) > 0
    assert changed.tolist() == [True] * 3 + [False] * (NUM_WS - 3)


def test_unknown_names_and_wrong_width_are_clear_errors():
    ds = DirectionSet(rand_dirs(["age"]))
    ws = torch.randn(1, NUM_WS, W_DIM)
    with pytest.raises(FaceAppError, match="unknown edit 'agee'"):
        apply_edits(ws, ds, {"agee": 1})
    with pytest.raises(FaceAppError, match="unknown held attribute"):
        apply_edits(ws, ds, {"age": 1}, hold=["gender"])
    with pytest.raises(FaceAppError, match="another generator"):
        apply_edits(torch.randn(1, NUM_WS, 16), ds, {"age": 1})


def test_timeline_goes_young_to_old_along_the_conditional_direction():
    ds = DirectionSet(rand_dirs(["age", "gender"], seed=9))
    ws = torch.randn(1, NUM_WS, W_DIM)
    frames = timeline(ws, ds, "age", hold=["gender"])
    assert frames.shape == (12, NUM_WS, W_DIM)
    age = torch.as_tensor(ds["age"].vector)
    proj = frames[:, 0] @ age
    assert torch.all(proj[1:] > proj[:-1])  # monotone
    torch.testing.assert_close(frames[0], apply_edits(ws, ds, {"age": -3.0}, hold=["gender"])[0])
    torch.testing.assert_close(frames[-1], apply_edits(ws, ds, {"age": 3.0}, hold=["gender"])[0])
    g = torch.as_tensor(ds["gender"].vector)
    torch.testing.assert_close(frames[:, 0] @ g, (ws[0, 0] @ g).expand(12), atol=1e-5, rtol=0)


def test_direction_scale_is_the_std_of_projections():
    rng = np.random.default_rng(0)
    v = np.zeros(W_DIM)
    v[3] = 1.0
    ws = rng.normal(size=(4000, W_DIM)) * 0.5
    ws[:, 3] *= 8.0  # std 4 along the direction
    assert direction_scale(v, ws) == pytest.approx(4.0, rel=0.05)
    cal = DirectionSet([Direction("x", v)]).calibrated(ws)
    assert cal["x"].scale == pytest.approx(4.0, rel=0.05)


# ------------------------------------------------------------------------- storage


def test_direction_set_round_trip(tmp_path):
    rng = np.random.default_rng(11)
    ds = DirectionSet(
        [
            Direction("age", rng.normal(size=W_DIM), scale=2.5, description="older (+)", metrics={"acc": 0.93}),
            Direction("wrinkles", rng.normal(size=(NUM_WS, W_DIM)), layers=(4, 8), strength_range=(-2, 5)),
        ],
        meta={"generator": "demo"},
    )
    folder = ds.save(tmp_path / "directions")
    assert sorted(os.listdir(folder)) == ["directions.json", "directions.safetensors"]
    back = DirectionSet.load(folder)
    assert list(back) == ["age", "wrinkles"] and back.meta == {"generator": "demo"}
    for name in ds:
        a, b = ds[name], back[name]
        np.testing.assert_array_equal(a.vector, b.vector)
        assert (a.layers, a.strength_range, a.scale, a.description, a.metrics) == (
            b.layers,
            b.strength_range,
            b.scale,
            b.description,
            b.metrics,
        )
    assert DirectionSet.load(folder / "directions.json").keys() == ds.keys()


def test_damaged_direction_sets_are_refused(tmp_path):
    ds = DirectionSet(rand_dirs(["age", "smile"]))
    folder = ds.save(tmp_path / "d")
    doc = json.loads((folder / "directions.json").read_text())
    doc["directions"]["glasses"] = doc["directions"].pop("smile")
    (folder / "directions.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="lists"):
        DirectionSet.load(folder)
    with pytest.raises(CheckpointError, match="missing"):
        DirectionSet.load(tmp_path / "nowhere")
    (folder / "directions.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        DirectionSet.load(folder)


# ------------------------------------------------------------------------- importers


def test_interfacegan_npy(tmp_path):
    rng = np.random.default_rng(12)
    n = rng.normal(size=(1, W_DIM)).astype(np.float32)
    n /= np.linalg.norm(n)
    path = tmp_path / "stylegan_ffhq_age_w_boundary.npy"
    np.save(path, n)
    d = from_interfacegan_npy(path)
    assert d.name == "age" and d.vector.shape == (W_DIM,) and d.scale == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(d.vector, n[0], atol=1e-7)
    to_interfacegan_npy(d, tmp_path / "stylegan_ffhq_age2_w_boundary.npy")  # round trip
    back = np.load(tmp_path / "stylegan_ffhq_age2_w_boundary.npy")
    assert back.shape == (1, W_DIM)
    np.testing.assert_allclose(back, n, atol=1e-6)
    # InterFaceGAN's own edit: latent + distance * boundary
    ws = torch.randn(1, NUM_WS, W_DIM)
    out = apply_edits(ws, DirectionSet([d]), {"age": 1.7})
    torch.testing.assert_close(out, ws + 1.7 * torch.as_tensor(n), rtol=1e-6, atol=1e-6)
    assert interfacegan_name("stylegan_celebahq_age_c_gender_boundary.npy") == ("age_c_gender", None)
    assert interfacegan_name("pggan_celebahq_smile_boundary.npy") == ("smile", None)
    np.save(tmp_path / "stylegan_ffhq_age_z_boundary.npy", n)
    with pytest.raises(CheckpointError, match="Z space"):
        from_interfacegan_npy(tmp_path / "stylegan_ffhq_age_z_boundary.npy")
    # a flattened W+ boundary, read per layer when w_dim is given
    np.save(tmp_path / "stylegan_ffhq_pose_wp_boundary.npy", rng.normal(size=(1, NUM_WS * W_DIM)))
    wp = from_interfacegan_npy(tmp_path / "stylegan_ffhq_pose_wp_boundary.npy", w_dim=W_DIM)
    assert wp.name == "pose" and wp.vector.shape == (NUM_WS, W_DIM)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CheckpointError):
        from_interfacegan_npy(tmp_path / "obj.npy")


def test_e4e_pt_and_hostile_pt(tmp_path):
    v = torch.randn(1, 512)
    torch.save(v, tmp_path / "age.pt")
    d = from_e4e_pt(tmp_path / "age.pt")
    assert d.name == "age" and d.w_dim == 512 and d.scale == pytest.approx(float(v.norm()), rel=1e-6)
    ws = torch.randn(2, 18, 512)
    # e4e's own edit: latent + factor * direction, over all layers — strength = factor exactly
    torch.testing.assert_close(apply_edits(ws, DirectionSet([d]), {"age": -2.0}), ws - 2.0 * v, rtol=0, atol=1e-5)
    # and back: the written file is the same tensor
    to_e4e_pt(d, tmp_path / "age_out.pt")
    torch.testing.assert_close(torch.load(tmp_path / "age_out.pt", weights_only=True), v, rtol=1e-6, atol=1e-6)

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(tmp_path / "smile.pt", "wb") as f:
        pickle.dump(Evil(), f, protocol=2)  # what a hostile download would hold
    torch.save({"x": Evil()}, tmp_path / "pose.pt")
    for name in ("smile.pt", "pose.pt"):
        with pytest.raises(UnsafeCheckpointError):
            from_e4e_pt(tmp_path / name)
    assert not marker.exists()
    torch.save({"not": "a tensor"}, tmp_path / "dict.pt")
    with pytest.raises(CheckpointError, match="not a direction tensor"):
        from_e4e_pt(tmp_path / "dict.pt")


def test_ganspace_npz_and_e4e_pca(tmp_path):
    rng = np.random.default_rng(13)
    n_comp = 6
    comp = rng.normal(size=(n_comp, 1, W_DIM)).astype(np.float32)
    comp /= np.linalg.norm(comp, axis=-1, keepdims=True)
    stdev = np.linspace(3, 1, n_comp).astype(np.float32)
    np.savez_compressed(
        tmp_path / "stylegan2-ffhq_style_ipca_c6_n1000_w.npz",
        act_comp=comp,
        act_mean=np.zeros((1, W_DIM), np.float32),
        act_stdev=stdev,
        lat_comp=comp,
        lat_mean=np.zeros((1, W_DIM), np.float32),
        lat_stdev=stdev,
        var_ratio=np.full(n_comp, 0.1, np.float32),
        random_stdevs=np.ones(n_comp, np.float32),
    )
    ds = from_ganspace(tmp_path / "stylegan2-ffhq_style_ipca_c6_n1000_w.npz", {"wrinkles": (2, (3, 6))})
    d = ds["wrinkles"]
    assert d.layers == (3, 6) and d.scale == pytest.approx(stdev[2])
    ws = torch.randn(1, NUM_WS, W_DIM)
    out = apply_edits(ws, ds, {"wrinkles": 1.5})
    expect = ws.clone()
    expect[:, 3:6] += 1.5 * float(stdev[2]) * torch.as_tensor(comp[2, 0])  # GANSpace: strength in stdevs
    torch.testing.assert_close(out, expect, rtol=1e-5, atol=1e-5)
    assert list(from_ganspace(tmp_path / "stylegan2-ffhq_style_ipca_c6_n1000_w.npz")) == [f"pc{i}" for i in range(6)]
    torch.save(
        {"comp": torch.as_tensor(comp), "mean": torch.zeros(1, W_DIM), "std": torch.as_tensor(stdev)},
        tmp_path / "ffhq_pca.pt",
    )
    pt = from_ganspace(tmp_path / "ffhq_pca.pt", {"a": (4, None)})
    np.testing.assert_allclose(pt["a"].vector, comp[4, 0], atol=1e-6)
    with pytest.raises(CheckpointError, match="components"):
        from_ganspace(tmp_path / "ffhq_pca.pt", {"b": (9, None)})


def test_edits_import_neither_inversion_nor_training():
    import subprocess
    import sys

    code = (
        "import sys, faceapp.edits; "
        "bad = [m for m in sys.modules if m.startswith(('faceapp.inversion', 'training'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------- published files, provenance


def test_e4e_pose_pt_is_a_per_layer_direction_stored_on_cuda(tmp_path):
    import torch.serialization as ts

    row = torch.randn(W_DIM)
    pose = (row / row.norm()).repeat(1, NUM_WS, 1)  # [1, num_ws, w_dim], as e4e's pose.pt ([1, 18, 512])
    orig = ts.location_tag
    ts.location_tag = lambda storage: "cuda:0"  # the published file was saved from a GPU
    try:
        torch.save(pose, tmp_path / "pose.pt")
    finally:
        ts.location_tag = orig
    d = from_e4e_pt(tmp_path / "pose.pt")
    assert d.name == "pose" and d.per_layer and d.vector.shape == (NUM_WS, W_DIM)
    assert d.scale == pytest.approx(NUM_WS**0.5, rel=1e-6)
    ws = torch.randn(2, NUM_WS, W_DIM)
    torch.testing.assert_close(apply_edits(ws, DirectionSet([d]), {"pose": 1.5}), ws + 1.5 * pose, atol=1e-5, rtol=0)


def test_read_direction_file_by_content(tmp_path):
    from faceapp.edits import read_direction_file

    torch.save(torch.randn(1, W_DIM), tmp_path / "age.pt")
    np.save(tmp_path / "stylegan2_ffhq_smile_w_boundary.npy", np.random.default_rng(0).normal(size=(1, W_DIM)))
    comp = np.eye(3, W_DIM, dtype=np.float32)[:, None, :]
    np.savez(tmp_path / "g.npz", lat_comp=comp, lat_stdev=np.ones(3, np.float32))
    torch.save({"comp": torch.as_tensor(comp), "mean": torch.zeros(1, W_DIM), "std": torch.ones(3)},
               tmp_path / "ffhq_pca.pt")
    assert list(read_direction_file(tmp_path / "age.pt")) == ["age"]
    assert list(read_direction_file(tmp_path / "age.pt", "older")) == ["older"]
    assert list(read_direction_file(tmp_path / "stylegan2_ffhq_smile_w_boundary.npy")) == ["smile"]
    assert list(read_direction_file(tmp_path / "g.npz")) == ["pc0", "pc1", "pc2"]
    assert list(read_direction_file(tmp_path / "ffhq_pca.pt")) == ["pc0", "pc1", "pc2"]
    DirectionSet(rand_dirs(["a", "b"])).save(tmp_path / "set")
    assert list(read_direction_file(tmp_path / "set")) == ["a", "b"]
    assert list(read_direction_file(tmp_path / "set" / "directions.json")) == ["a", "b"]
    with pytest.raises(CheckpointError, match="names its own"):
        read_direction_file(tmp_path / "set", "x")
    (tmp_path / "notes.txt").write_text("?")
    with pytest.raises(CheckpointError, match="unknown direction file type"):
        read_direction_file(tmp_path / "notes.txt")
    with pytest.raises(CheckpointError, match="not found"):
        read_direction_file(tmp_path / "missing.pt")


def test_made_for_source_reads_the_published_names():
    from faceapp.edits import made_for_source

    sg1 = {"family": "stylegan", "stylegan_version": 1}
    assert made_for_source("interfacegan:stylegan_ffhq_age_w_boundary.npy") == sg1
    assert made_for_source("interfacegan:stylegan_celebahq_eyeglasses_boundary.npy") == sg1
    assert made_for_source("interfacegan:pggan_celebahq_smile_boundary.npy") == {"family": "pggan",
                                                                                 "stylegan_version": None}
    assert made_for_source("interfacegan:stylegan2_ffhq_age_w_boundary.npy")["stylegan_version"] == 2
    assert made_for_source("interfacegan:age.npy") == {}  # unknown: judged by shape only
    assert made_for_source("e4e:age.pt")["stylegan_version"] == 2
    assert made_for_source("ganspace:stylegan2-ffhq_style_ipca_c80_n1000000_w.npz#20")["family"] == "stylegan2"
    assert made_for_source("ganspace:stylegan-ffhq_g_mapping_ipca_c80_n1000000_w.npz#3")["stylegan_version"] == 1
    assert made_for_source("ganspace:ffhq_pca.pt#4")["family"] == "stylegan2"
    assert made_for_source("random") == made_for_source("") == {}


def _tiny_G(seed):
    from faceapp.stylegan import Generator

    torch.manual_seed(seed)
    return Generator(z_dim=W_DIM, c_dim=0, w_dim=W_DIM, img_resolution=16, img_channels=3,
                     mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=16)).eval()


def test_fingerprint_and_check_directions():
    from faceapp.edits import DirectionMismatchError, check_directions, generator_fingerprint
    from faceapp.edits.provenance import stamped

    G, G2 = _tiny_G(0), _tiny_G(1)
    torch.manual_seed(5)
    before = torch.rand(2)
    torch.manual_seed(5)
    fp = generator_fingerprint(G, source="dir/g.pkl")
    assert torch.equal(torch.rand(2), before)  # the global RNG is left alone
    assert fp == generator_fingerprint(G, source="g.pkl") and fp["source"] == "g.pkl" and len(fp["probe"]) == 16
    assert (fp["w_dim"], fp["num_ws"], fp["family"], fp["stylegan_version"]) == (W_DIM, G.num_ws, "stylegan2", 2)
    fp2 = generator_fingerprint(G2)
    assert fp2["mapping_id"] != fp["mapping_id"]
    ds = DirectionSet(rand_dirs(["age"]))
    assert check_directions(ds, G) == []  # nothing recorded, nothing wrong
    mine = stamped(ds, fp)
    assert check_directions(mine, G) == [] and check_directions(mine, fp) == []
    with pytest.raises(DirectionMismatchError, match="from g.pkl"):
        check_directions(mine, G2)
    reasons = check_directions(mine, G2, force=True)
    assert len(reasons) == 1 and "not this one" in reasons[0]
    # The same weights, slightly perturbed (another file format's round-off), still match by the probe.
    G2.mapping.load_state_dict({k: v * (1 + 1e-6) for k, v in G.mapping.state_dict().items()})
    assert generator_fingerprint(G2)["mapping_id"] != fp["mapping_id"] and check_directions(mine, G2) == []
    sg1 = DirectionSet([Direction("age", np.ones(W_DIM), source="interfacegan:stylegan_ffhq_age_w_boundary.npy")])
    with pytest.raises(DirectionMismatchError, match="made for StyleGAN1, but the generator is StyleGAN2"):
        check_directions(sg1, G)
    wide = DirectionSet([Direction("age", np.ones(2 * W_DIM))])
    with pytest.raises(DirectionMismatchError, match=f"width {2 * W_DIM}"):
        check_directions(wide, G)
    assert check_directions(stamped(sg1, fp, ["accepted"]), G) == []  # recorded for G: authoritative


def test_directions_fit_a_generator_grown_from_theirs_but_not_a_shrunk_or_other_one():
    from faceapp.edits import DirectionMismatchError, check_directions, generator_fingerprint
    from faceapp.edits.provenance import stamped
    from training.train_generator import grow_generator

    G = _tiny_G(0)
    big = grow_generator(G, 2 * G.img_resolution)
    mine = stamped(DirectionSet(rand_dirs(["age"])), generator_fingerprint(G))
    assert big.num_ws > G.num_ws and check_directions(mine, big) == []
    # a set made on the grown one does not fit the small one (fewer layers than it was made for)
    theirs = stamped(DirectionSet(rand_dirs(["age"])), generator_fingerprint(big))
    with pytest.raises(DirectionMismatchError, match=f"made for {big.num_ws} ws"):
        check_directions(theirs, G)
    # another model grown to the same size does not fit: its mapping differs
    with pytest.raises(DirectionMismatchError, match="do not belong"):
        check_directions(mine, grow_generator(_tiny_G(1), 2 * G.img_resolution))
    # nor do per-layer rows of the small G's W+
    rows = DirectionSet([Direction("pose", np.ones((G.num_ws, W_DIM)))])
    with pytest.raises(DirectionMismatchError, match="ws"):
        check_directions(stamped(rows, generator_fingerprint(G)), big)
