"""`python -m faceapp fetch ffhq` against a local HTTP server serving small files in the official formats.

The server (127.0.0.1, a thread) answers HTTP Range requests as a CDN does, logs every request, can
cut a response short (the client sees the connection drop mid-file) and can serve wrong bytes. No
test touches the internet: the fetch code is pointed at the server with --base-url.
"""

import dataclasses
import hashlib
import http.server
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import faceapp.fetch as fetch
from faceapp import cli
from faceapp.bundle import load_bundle
from faceapp.edits import apply_edits
from faceapp.stylegan.legacy import import_checkpoint

try:
    from tests.test_bundle_cli import direction_files, nvidia_pkl_from_rosinality
    from tests.test_encoder import e4e_file
except ImportError:  # tests/ is on sys.path (pytest rootdir-relative import)
    from test_bundle_cli import direction_files, nvidia_pkl_from_rosinality
    from test_encoder import e4e_file

ROOT = Path(__file__).parent.parent


class Server:
    """A ThreadingHTTPServer on 127.0.0.1 serving `files` {name: bytes} with Range support."""

    def __init__(self, files):
        self.files = dict(files)
        self.log = []  # (name, Range header or None)
        self.cut = {}  # name -> bytes to send on the next request before dropping the connection
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                rng = self.headers.get("Range")
                server.log.append((name, rng))
                data = server.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.end_headers()
                    return
                body = data[start:]
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                n = server.cut.pop(name, None)
                self.wfile.write(body if n is None else body[:n])
                self.wfile.flush()
                if n is not None:
                    self.connection.shutdown(socket.SHUT_RDWR)  # dropped mid-file

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """ffhq.pkl (NVIDIA format), e4e_ffhq_encode.pt and age/smile/pose.pt for one 32 px generator."""
    root = tmp_path_factory.mktemp("official-ffhq")
    e4e = e4e_file(root / "e4e_ffhq_encode.pt", seed=0)
    marker = root / "module_src_ran"
    nvidia_pkl_from_rosinality(root / "ffhq.pkl", e4e["dec"], e4e["latent_avg"], marker)
    dirs = direction_files(root)
    files = {name: (root / name).read_bytes() for name in ("ffhq.pkl", "e4e_ffhq_encode.pt", "age.pt", "smile.pt",
                                                            "pose.pt")}
    return dict(root=root, files=files, dirs=dirs, marker=marker)


@pytest.fixture
def setup(official, tmp_path, monkeypatch):
    """An empty faceapp cache, and the FFHQ file list with the checksums of the test files."""
    monkeypatch.setenv("FACEAPP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FACEAPP_FETCH_BASE_URL", raising=False)
    sums = {n: (hashlib.sha256(b).hexdigest(), len(b)) for n, b in official["files"].items()}
    files = tuple(
        dataclasses.replace(f, sha256=sums[f.filename][0], size=sums[f.filename][1]) if f.sha256 else f
        for f in fetch.FFHQ_FILES
    )
    monkeypatch.setattr(fetch, "FFHQ_FILES", files)
    return tmp_path / "cache"


def fetch_ffhq(*args):
    return cli.main(["fetch", "ffhq", "--quiet", *map(str, args)])


def test_fetch_ffhq_builds_the_bundle_the_app_finds_by_name(official, setup, capsys):
    with Server(official["files"]) as server:
        assert fetch_ffhq("--base-url", server.url) == 0
    out = capsys.readouterr().out
    assert "use it: python app.py --model ffhq" in out and "encoder yes" in out
    assert sorted(n for n, _ in server.log) == sorted(official["files"])  # each file once
    b = load_bundle("ffhq")  # by name, from the cache
    assert b.root == setup / "models" / "ffhq" and b.encoder is not None and b.name == "ffhq"
    assert b.direction_names == ["age", "smile", "pose"] and b.align_spec.kind == "ffhq"
    for name, data in official["files"].items():  # the downloads are the served bytes
        assert (setup / "downloads" / name).read_bytes() == data
    ref_G = import_checkpoint(setup / "downloads" / "ffhq.pkl").nets["G_ema"]
    ws = torch.randn(1, b.G.num_ws, b.G.w_dim)
    with torch.no_grad():
        torch.testing.assert_close(b.G.synthesis(ws, noise_mode="const"), ref_G.synthesis(ws, noise_mode="const"))
    torch.testing.assert_close(apply_edits(ws, b.directions, {"smile": 2.0}), ws + 2.0 * official["dirs"]["smile"],
                               atol=1e-5, rtol=0)
    assert "NVIDIA" in b.card and not official["marker"].exists()
    # The app's own model resolution takes the name too.
    sys.path.insert(0, str(ROOT))
    try:
        import app

        assert app.resolve_model("ffhq").root == b.root
    finally:
        sys.path.remove(str(ROOT))
    # A second run downloads nothing: the checked files are kept.
    with Server(official["files"]) as server:
        assert fetch_ffhq("--base-url", server.url) == 0
    assert server.log == []


def test_an_interrupted_download_resumes_where_it_stopped(official, setup, capsys):
    data = official["files"]["ffhq.pkl"]
    half = len(data) // 2
    with Server(official["files"]) as server:
        server.cut["ffhq.pkl"] = half
        assert fetch_ffhq("--base-url", server.url) == 2
        err = capsys.readouterr().err
        assert "cut off after" in err and "resume" in err and err.count("\n") == 1
        part = setup / "downloads" / "ffhq.pkl.part"
        assert part.read_bytes() == data[:half]
        assert not (setup / "models" / "ffhq").exists()
        server.log.clear()
        assert fetch_ffhq("--base-url", server.url) == 0
    assert ("ffhq.pkl", f"bytes={half}-") in server.log  # asked for the rest only
    assert (setup / "downloads" / "ffhq.pkl").read_bytes() == data and not part.exists()
    assert load_bundle("ffhq").encoder is not None


def test_a_wrong_checksum_is_refused(official, setup, capsys):
    files = dict(official["files"])
    bad = bytearray(files["age.pt"])
    bad[-30] ^= 0xFF  # same size, other bytes
    files["age.pt"] = bytes(bad)
    with Server(files) as server:
        assert fetch_ffhq("--base-url", server.url) == 2
    err = capsys.readouterr().err
    assert "age.pt" in err and "sha256 checksum is wrong" in err and "omertov/encoder4editing" in err
    assert not (setup / "downloads" / "age.pt").exists() and not (setup / "downloads" / "age.pt.part").exists()
    assert not (setup / "models" / "ffhq").exists()
    # A file of the wrong size is refused too (and a bad file already in the cache is replaced).
    (setup / "downloads" / "smile.pt").write_bytes(b"PK\x03\x04 not it")
    with Server(official["files"]) as server:
        assert fetch_ffhq("--base-url", server.url) == 0
    assert (setup / "downloads" / "smile.pt").read_bytes() == official["files"]["smile.pt"]


def test_google_drive_web_page_instead_of_the_encoder(official, setup, capsys, tmp_path):
    files = dict(official["files"])
    files["e4e_ffhq_encode.pt"] = b"<!DOCTYPE html><html><body>Google Drive can't scan this file for viruses"
    with Server(files) as server:
        assert fetch_ffhq("--base-url", server.url) == 2
        err = capsys.readouterr().err
        assert "web page" in err and "drive.google.com/file/d/" in err and "browser" in err
        assert "--no-encoder" in err and "--e4e FILE" in err
        # Without the encoder, or with one downloaded by hand.
        assert fetch_ffhq("--base-url", server.url, "--no-encoder") == 0
        assert load_bundle("ffhq").encoder is None
        capsys.readouterr()
        by_hand = tmp_path / "Downloads" / "e4e_ffhq_encode.pt"
        by_hand.parent.mkdir()
        by_hand.write_bytes(official["files"]["e4e_ffhq_encode.pt"])
        assert fetch_ffhq("--base-url", server.url, "--e4e", by_hand, "--out", tmp_path / "mine") == 0
    assert "use it: python app.py --model " + str(tmp_path / "mine") in capsys.readouterr().out
    assert load_bundle(tmp_path / "mine").encoder is not None


def _closed_port_url():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def test_offline_fails_with_one_clear_line(setup, capsys):
    assert fetch_ffhq("--base-url", _closed_port_url()) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: could not download 5 file(s) for the FFHQ bundle") and err.count("\n") == 1
    for what in ("ffhq.pkl", "e4e_ffhq_encode.pt", "age.pt", "smile.pt", "pose.pt", str(setup / "downloads"),
                 "nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl", "drive.google.com",
                 "Connection refused", "python -m faceapp fetch ffhq"):
        assert what in err, what
    assert not (setup / "models").exists()


def test_offline_subprocess_has_no_traceback(setup, tmp_path):
    env = {"FACEAPP_CACHE": str(setup), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1",
           "FACEAPP_FETCH_BASE_URL": _closed_port_url()}
    r = subprocess.run([sys.executable, "-m", "faceapp", "fetch", "ffhq", "--quiet"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.startswith("error: could not download")


def test_the_official_file_list():
    """What the real command asks for: NVIDIA's ada-pytorch FFHQ pkl, e4e's files at a pinned commit."""
    gen, enc, *dirs = fetch.FFHQ_FILES
    assert gen.urls[0] == "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl"
    assert enc.filename == "e4e_ffhq_encode.pt" and "drive.google.com" in enc.page
    assert [d.filename for d in dirs] == ["age.pt", "smile.pt", "pose.pt"]
    for d in dirs:
        assert d.sha256 and len(d.sha256) == 64 and d.size
        assert d.urls[0].startswith("https://raw.githubusercontent.com/omertov/encoder4editing/99ea505")
        assert d.urls[0].endswith(f"editings/interfacegan_directions/{d.filename}")


def test_out_folder_that_is_not_a_bundle_is_left_alone(setup, tmp_path, capsys):
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "keep.jpg").write_bytes(b"x")
    assert fetch_ffhq("--out", mine, "--base-url", _closed_port_url()) == 2
    assert "is not a faceapp bundle" in capsys.readouterr().err and (mine / "keep.jpg").exists()
