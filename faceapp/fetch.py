"""`python -m faceapp fetch ffhq`: the official FFHQ StyleGAN2 files, downloaded, checked and bundled; and
`fetch_lpips` (`python -m faceapp fetch-lpips`, the app's start-up): the ImageNet backbone real LPIPS needs.

The one place besides the app's hub loading that downloads. `fetch ffhq` fetches into
`faceapp.bundle.cache_dir()/downloads/`:

- `ffhq.pkl`: NVIDIA stylegan2-ada-pytorch's FFHQ 1024 px generator (nvlabs-fi-cdn, NGC as a mirror);
  checked by reading it with the safe importer (NVIDIA publishes no checksum);
- `e4e_ffhq_encode.pt`: e4e's FFHQ encoder, on Google Drive; must be a torch zip file the e4e importer reads;
- `age.pt`, `smile.pt`, `pose.pt`: e4e's InterFaceGAN directions for StyleGAN2 FFHQ (GitHub, a pinned
  commit); size and sha256 checked.

then converts them with the importers that execute nothing from a file, and writes the bundle
`cache_dir()/models/ffhq/`, which `load_bundle('ffhq')` (so `python app.py --model ffhq`) finds.

Downloads resume: bytes arrive in `<file>.part`; a run that is cut off keeps them and the next run
asks the server for the rest (HTTP Range). A file whose size or checksum is wrong is deleted and
refused. Google Drive hands out large files to scripts only sometimes (it may answer with a web
page that needs a browser): then the message says where to download `e4e_ffhq_encode.pt` by hand
and where to put it, or pass `--e4e FILE` / `--no-encoder`.

`FACEAPP_FETCH_BASE_URL` (or `base_url=`) fetches every file as `<base>/<file name>` instead, e.g.
from a local mirror (the tests use a server on 127.0.0.1).
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

from faceapp.errors import ModelUnavailableError
from faceapp.imageio import atomic_path

__all__ = [
    "BASE_URL_ENV",
    "DownloadError",
    "FFHQ_CARD",
    "FFHQ_DIRECTIONS",
    "FFHQ_ENCODER",
    "FFHQ_FILES",
    "FFHQ_GENERATOR",
    "RemoteFile",
    "download",
    "downloads_dir",
    "fetch_ffhq",
    "fetch_lpips",
    "lpips_file",
]

BASE_URL_ENV = "FACEAPP_FETCH_BASE_URL"
_CHUNK = 1 << 20
_E4E_COMMIT = "99ea50578695d2e8a1cf7259d8ee89b23eea942b"  # encoder4editing main, 2021 (directions unchanged since)
_E4E_DRIVE_ID = "1cUv_reLE6k3604or78EranS7XzuVMWeO"


class DownloadError(ModelUnavailableError):
    """A file could not be downloaded (offline, refused, cut off, or not the file it should be)."""


@dataclass(frozen=True)
class RemoteFile:
    """A file to fetch: where from (tried in order), what it must look like, where to get it by hand.

    filename: its name in the downloads folder. urls: mirrors, tried in order. sha256 / size: checked
    when known. magic: the bytes it must start with (b'PK\\x03\\x04' torch zip, b'\\x80' pickle).
    page: where a person can download it (a browser page), for messages. what: a few words for messages.
    """

    filename: str
    urls: tuple[str, ...]
    what: str
    sha256: str | None = None
    size: int | None = None
    magic: bytes = b""
    page: str | None = None


FFHQ_GENERATOR = RemoteFile(
    "ffhq.pkl",
    (
        "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl",
        "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files/stylegan2-ffhq-1024x1024.pkl",
    ),
    "NVIDIA's StyleGAN2 FFHQ 1024 px generator (stylegan2-ada-pytorch)",
    magic=b"\x80",
    page="https://github.com/NVlabs/stylegan2-ada-pytorch#data-repository",
)
FFHQ_ENCODER = RemoteFile(
    "e4e_ffhq_encode.pt",
    (f"https://drive.usercontent.google.com/download?id={_E4E_DRIVE_ID}&export=download&confirm=t",),
    "e4e's FFHQ encoder",
    magic=b"PK\x03\x04",
    page=f"https://drive.google.com/file/d/{_E4E_DRIVE_ID}/view",
)


def _e4e_direction(name: str, sha256: str, size: int) -> RemoteFile:
    rel = f"editings/interfacegan_directions/{name}.pt"
    return RemoteFile(
        f"{name}.pt",
        (
            f"https://raw.githubusercontent.com/omertov/encoder4editing/{_E4E_COMMIT}/{rel}",
            f"https://github.com/omertov/encoder4editing/raw/{_E4E_COMMIT}/{rel}",
        ),
        f"e4e's {name} direction",
        sha256=sha256,
        size=size,
        magic=b"PK\x03\x04",
        page=f"https://github.com/omertov/encoder4editing/blob/main/{rel}",
    )


# Sizes and checksums of the files at that commit of encoder4editing.
FFHQ_DIRECTIONS = (
    _e4e_direction("age", "50074516b1629707d89b5e43d6b8abd1792212fa3b961a87a11323d6a5222ae0", 2808),
    _e4e_direction("smile", "817a7e732b59dee9eba862bec8bd7e8373568443bc9f9731a21cf9b0356f0653", 2808),
    _e4e_direction("pose", "736e0eacc8488fa0b020a2e7bd256b957284c364191dfea693705e5d06d43e7d", 37624),
)
FFHQ_FILES = (FFHQ_GENERATOR, FFHQ_ENCODER, *FFHQ_DIRECTIONS)


def downloads_dir() -> Path:
    """Where `fetch` keeps downloaded files: `cache_dir()/downloads` (see faceapp.bundle.cache_dir)."""
    from faceapp.bundle import cache_dir

    return cache_dir() / "downloads"


# ---------------------------------------------------------------------------------------------
# One file.


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _problem(path: Path, remote: RemoteFile) -> str | None:
    """Why the file at `path` is not `remote` (None: it is, as far as can be checked)."""
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        return f"it has {size:,} bytes, not {remote.size:,}"
    with open(path, "rb") as f:
        head = f.read(64)
    if remote.magic and not head.startswith(remote.magic):
        if head.lstrip().lower().startswith((b"<!doctype", b"<html")):
            return "it is a web page, not the file (the site wants a browser)"
        return "it does not start like the file should"
    if remote.sha256 is not None and _sha256(path) != remote.sha256:
        return "its sha256 checksum is wrong"
    return None


def _urls(remote: RemoteFile, base_url: str | None) -> tuple[str, ...]:
    base = base_url if base_url is not None else os.environ.get(BASE_URL_ENV) or None
    return (f"{base.rstrip('/')}/{remote.filename}",) if base else remote.urls


def _fetch_url(url: str, part: Path, remote: RemoteFile, progress: bool, timeout: float) -> None:
    """Append the rest of `url` to `part` (resuming from its size); raises DownloadError when cut off."""
    from tqdm import tqdm

    have = part.stat().st_size if part.exists() else 0
    if remote.size is not None and have > remote.size:
        part.unlink()
        have = 0
    headers = {"User-Agent": "faceapp-fetch", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to send: the part is complete (it is checked next)
            return
        raise DownloadError(f"HTTP {e.code} {e.reason}") from None
    with response:
        status = response.status
        if have and status == 200:  # the server ignored the Range: start again
            have = 0
        elif status == 206:
            start = (response.headers.get("Content-Range") or "").partition(" ")[2].partition("-")[0]
            if start.strip() != str(have):
                part.unlink(missing_ok=True)  # cannot be continued: the next try starts afresh
                raise DownloadError(f"the server resumed at byte {start or '?'}, not {have}")
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else remote.size
        got = have
        with open(part, "ab" if have else "wb") as f, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=remote.filename,
            disable=not progress, leave=False,
        ) as bar:
            try:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    f.write(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
            except (OSError, HTTPException) as e:  # reset, timeout, IncompleteRead: keep what came
                raise DownloadError(
                    f"the download was cut off after {got:,}" + (f" of {total:,}" if total else "")
                    + f" bytes ({type(e).__name__}); run the command again to resume"
                ) from None
        if total is not None and got < total:  # the connection closed early
            raise DownloadError(f"the download was cut off after {got:,} of {total:,} bytes; run the command "
                                "again to resume")


def download(
    remote: RemoteFile,
    folder: str | os.PathLike | None = None,
    *,
    base_url: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download `remote` into `folder` (default `downloads_dir()`) and return its path.

    A file already there that passes the checks is kept. Bytes arrive in `<name>.part` and a run
    that is cut off resumes from them (HTTP Range) the next time. Each mirror is tried in turn; a
    result with the wrong size, start or sha256 is deleted.

    Raises:
        DownloadError: no mirror gave the right file (the message says why).
    """
    folder = Path(folder) if folder is not None else downloads_dir()
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / remote.filename
    reasons: list[str] = []
    if dest.is_file():
        problem = _problem(dest, remote)
        if problem is None:
            return dest
        dest.unlink()
        reasons.append(f"the {remote.filename} already in {folder} was removed: {problem}")
    part = dest.with_name(dest.name + ".part")
    for url in _urls(remote, base_url):
        try:
            _fetch_url(url, part, remote, progress, timeout)
        except DownloadError as e:
            reasons.append(str(e))
            continue
        except (urllib.error.URLError, OSError, HTTPException, ValueError) as e:
            why = getattr(e, "reason", None) or e
            text = getattr(why, "strerror", None) or str(why)
            reasons.append(f"{text} ({type(why).__name__})" if isinstance(why, Exception) else text)
            continue
        problem = _problem(part, remote) if part.exists() else "nothing arrived"
        if problem is None:  # not atomic_path: the .part outlives a cut-off run, which the next one resumes
            os.replace(part, dest)
            return dest
        part.unlink(missing_ok=True)
        reasons.append(f"refused: {problem}")
    raise DownloadError(" / ".join(dict.fromkeys(reasons)) or "no URL to fetch it from")


# ---------------------------------------------------------------------------------------------
# The FFHQ bundle.

FFHQ_CARD = """# FFHQ StyleGAN2 (official weights)

Made by `python -m faceapp fetch ffhq` from files published by others; faceapp trained none of them.

- Generator: NVIDIA's StyleGAN2 (config F) trained on FFHQ, 1024x1024, from stylegan2-ada-pytorch
  (`ffhq.pkl`). NVIDIA Source Code License: non-commercial use only.
- Encoder: e4e (Tov et al. 2021, "Designing an Encoder for StyleGAN Image Manipulation"),
  `e4e_ffhq_encode.pt`, MIT license{encoder_note}.
- Directions: e4e's InterFaceGAN directions for StyleGAN2 FFHQ ({directions}), MIT license; strengths
  are e4e's factors (`latent + factor * direction`).
- FFHQ (the training faces) is CC BY-NC-SA 4.0 (NVIDIA). Faces are cropped as FFHQ was (dlib landmarks, quad crop).
"""


def fetch_ffhq(
    out: str | os.PathLike | None = None,
    *,
    generator: str | os.PathLike | None = None,
    encoder: str | os.PathLike | None = None,
    no_encoder: bool = False,
    base_url: str | None = None,
    progress: bool = True,
    files: Sequence[RemoteFile] | None = None,
    timeout: float = 60.0,
    log=print,
) -> Path:
    """Download the official FFHQ files (see the module doc), convert them and write the bundle; returns its folder.

    Args:
        out: the bundle folder (default `named_model_dir('ffhq')`, which `load_bundle('ffhq')` finds).
        generator / encoder: local files to use instead of downloading them (e.g. downloaded by hand).
        no_encoder: build without the e4e encoder (the fast mode then optimises).
        base_url: fetch every file as `<base_url>/<file name>` (default $FACEAPP_FETCH_BASE_URL, else the
            official URLs).
        files: (generator, encoder, direction, ...) RemoteFiles, default FFHQ_FILES.
        log: where progress lines go (print; None for silence).

    Raises:
        ModelUnavailableError: some file could not be had; one message lists each, where to download it
            by hand and where to put it.
    """
    from faceapp.bundle import build_bundle, named_model_dir

    gen_file, enc_file, *dir_files = files if files is not None else FFHQ_FILES
    out = Path(out) if out is not None else named_model_dir("ffhq")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "bundle.json").is_file())):
        raise ModelUnavailableError(f"{out} exists and is not a faceapp bundle; choose another --out (it is replaced)")
    folder = downloads_dir()
    say = log or (lambda *a, **k: None)
    local = {gen_file.filename: generator, enc_file.filename: encoder}
    wanted = [gen_file] + ([] if no_encoder else [enc_file]) + list(dir_files)
    got: dict[str, Path] = {}
    failed: list[tuple[RemoteFile, str]] = []
    for remote in wanted:
        if local.get(remote.filename) is not None:
            path = Path(local[remote.filename])
            if not path.is_file():
                raise ModelUnavailableError(f"{path} does not exist (given for {remote.what})")
            got[remote.filename] = path
            continue
        try:
            got[remote.filename] = download(remote, folder, base_url=base_url, progress=progress, timeout=timeout)
            say(f"have {remote.filename} ({remote.what})")
        except DownloadError as e:
            failed.append((remote, str(e)))
    if failed:
        raise ModelUnavailableError(_failure_message(failed, folder, encoder_failed=enc_file in [f for f, _ in failed]))
    say(f"converting with the safe importers and writing the bundle to {out} ...")
    names = ", ".join(Path(f.filename).stem for f in dir_files)
    card = FFHQ_CARD.format(
        encoder_note="" if not no_encoder else " (not included: built with --no-encoder)", directions=names
    )
    with atomic_path(out) as tmp:  # the bundle is built beside `out`, then replaces it whole
        build_bundle(
            tmp,
            generator=got[gen_file.filename],
            encoder=None if no_encoder else got[enc_file.filename],
            directions=[got[f.filename] for f in dir_files],
            align="ffhq",
            name="ffhq",
            card=card,
            extra_meta={"fetched": {f.filename: {"urls": list(_urls(f, base_url)), "sha256": f.sha256}
                                    for f in wanted if local.get(f.filename) is None}},
        )
    return out


def _failure_message(failed: Iterable[tuple[RemoteFile, str]], folder: Path, *, encoder_failed: bool) -> str:
    failed = list(failed)
    whys = {why for _, why in failed}
    shared = whys.pop() if len(whys) == 1 else None
    if shared and any(k in shared for k in ("gaierror", "ConnectionRefused", "timed out", "Network is unreachable")):
        shared += "; offline?"
    parts = []
    for remote, why in failed:
        where = remote.page if remote.page and "drive.google" in remote.page else remote.urls[0]
        browser = " (Google Drive: open it in a browser)" if "drive.google" in where else ""
        parts.append(f"{remote.filename} from {where}{browser}" + ("" if shared else f" [{why}]"))
    options = "--generator FILE / --e4e FILE use files you already have"
    if encoder_failed:
        options += "; --no-encoder builds without the encoder"
    return (
        f"could not download {len(parts)} file(s) for the FFHQ bundle" + (f" ({shared})" if shared else "")
        + f". Download by hand into {folder}/ under these names: " + "; ".join(parts)
        + f". Then run `python -m faceapp fetch ffhq` again ({options})"
    )


# ---------------------------------------------------------------------- LPIPS's backbone (fetch-lpips)


def _lpips_weights(net: str):
    """torchvision's ImageNet weights of LPIPS's backbone `net` ('vgg' | 'alex')."""
    import torchvision

    return {"vgg": torchvision.models.VGG16_Weights.IMAGENET1K_V1,
            "alex": torchvision.models.AlexNet_Weights.IMAGENET1K_V1}[net]


def lpips_file(net: str = "vgg") -> Path:
    """Where LPIPS's backbone `net` ('vgg' | 'alex') is kept in the torch cache (it may not be there yet)."""
    from faceapp.inversion.losses import torch_cache_file

    return torch_cache_file(_lpips_weights(net).url.rsplit("/", 1)[-1])


def fetch_lpips(net: str = "vgg", *, progress: bool = True, timeout: float | None = None) -> Path:
    """Download torchvision's ImageNet weights of LPIPS's backbone `net` ('vgg' | 'alex') into the torch cache,
    where `faceapp.inversion.losses` looks for them; returns the file. torchvision checks the file's sha256 prefix
    (part of its name) before keeping it; a file already there is not fetched again.

    timeout: seconds a connection may stall (the app's start-up on a Space without internet must not hang);
    None: the socket default. ModelUnavailableError, saying what to do, when it cannot be downloaded.
    """
    import socket

    weights, target = _lpips_weights(net), lpips_file(net)
    old = socket.getdefaulttimeout()
    if timeout is not None:
        socket.setdefaulttimeout(timeout)
    try:
        weights.get_state_dict(progress=progress, check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError) as e:
        raise ModelUnavailableError(
            f"could not download {weights.url} ({e}). This needs internet; or copy {target.name} from a machine "
            f"that has it into {target.parent}. Until then the offline MobileNetV2 perceptual loss is used."
        ) from e
    finally:
        socket.setdefaulttimeout(old)
    return target
