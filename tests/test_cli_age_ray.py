"""`python -m faceapp age --engine ray`: the same pixels and manifest as the local engine, bad photos recorded,
a killed worker retried, a killed driver resumed. On a local Ray instance (2 CPUs, no dashboard)."""

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

# Before Ray's import: the test instance listens on 127.0.0.1 only (faceapp does the same for its local instances).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from faceapp import cli  # noqa: E402
from faceapp.bundle import make_random_bundle  # noqa: E402

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent
FAST = ["--steps", "1", "--quiet"]


def _png_header(w: int, h: int) -> bytes:
    """A PNG that says it is w x h (the pixels are not there): refused from its header as too large."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def _copies(folder: Path, names) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copy(DATA / "astronaut.jpg", folder / f"{n}.jpg")
    return folder


# ------------------------------------------------------------------------------------------ without Ray


def test_faceapp_imports_without_ray_and_the_engine_says_how_to_install_it(tmp_path):
    code = (
        "import sys; sys.modules['ray'] = None\n"  # as if Ray were not installed
        "import faceapp, faceapp.cli, faceapp.batch_ray\n"
        "from faceapp import cli\n"
        f"rc = cli.main(['age', {str(DATA / 'astronaut.jpg')!r}, '--out', {str(tmp_path / 'o')!r},\n"
        "               '--engine', 'ray'])\n"
        "assert rc == 2, rc\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "--engine ray needs Ray" in r.stderr and "pip install 'faceapp[ray]'" in r.stderr
    assert not (tmp_path / "o").exists()  # refused before any work


def test_ray_options_need_the_ray_engine(tmp_path, capsys):
    rc = cli.main(["age", str(DATA / "astronaut.jpg"), "--out", str(tmp_path / "o"), "--address", "auto"])
    assert rc == 2 and "--address and --workers are for --engine ray" in capsys.readouterr().err


def test_requirements_keep_ray_out_of_the_app():
    """The Space installs requirements.txt: Ray is a dev requirement and the `ray` extra only."""
    assert "ray" not in (ROOT / "requirements.txt").read_text().lower()
    assert "ray[data]==" in (ROOT / "requirements-dev.txt").read_text()
    assert "ray[data]==" in (ROOT / "pyproject.toml").read_text()


# ------------------------------------------------------------------------------------------ on Ray


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray instance for the module: each CLI run joins it instead of starting its own."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(make_random_bundle(tmp_path_factory.mktemp("m") / "bundle", resolution=32, seed=2))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """One good photo and a bad one of each kind."""
    d = _copies(tmp_path_factory.mktemp("photos"), ["astronaut"])
    (d / "notes.png").write_text("this is text, named .png")
    (d / "broken.jpg").write_bytes((DATA / "astronaut.jpg").read_bytes()[:6000])  # a truncated JPEG
    Image.new("RGB", (160, 120), (128, 128, 128)).save(d / "blank.png")  # no face
    (d / "huge.png").write_bytes(_png_header(20000, 20000))  # 400 MP: too large
    return d


@pytest.fixture(scope="module")
def local_run(model, photos, tmp_path_factory):
    """The local engine on `photos` and a glob that matches nothing, at age -2 and +2: its output folder."""
    out = tmp_path_factory.mktemp("local")
    assert cli.main(["age", str(photos), str(out / "nope" / "*.jpg"), "--out", str(out), "--model", model,
                     "--strengths", "-2,2", *FAST]) == 1
    return out


@pytest.fixture(scope="module")
def reference(local_run):
    """The local engine's outputs for astronaut.jpg: {strength label: PNG bytes}."""
    return {label: (local_run / f"astronaut_age{label}.png").read_bytes() for label in ("-2", "+2")}


def test_an_unreachable_cluster_is_one_clear_line(model, tmp_path, capsys):
    pytest.importorskip("ray.data")
    rc = cli.main(["age", str(DATA / "astronaut.jpg"), "--out", str(tmp_path / "o"), "--model", model,
                   "--engine", "ray", "--address", "127.0.0.1:1", *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and "no Ray cluster answers at 127.0.0.1:1" in err and "Traceback" not in err


def test_same_pixels_and_manifest_as_the_local_engine(ray_session, model, photos, local_run, reference, tmp_path,
                                                      capsys):
    more = _copies(tmp_path / "more", ["second"])  # read by Ray Data through a URL
    ray_out = tmp_path / "ray"
    rc = cli.main(["age", str(photos), str(local_run / "nope" / "*.jpg"), f"file://{more}/", "--out", str(ray_out),
                   "--model", model, "--strengths", "-2,2", "--engine", "ray", "--workers", "2", *FAST])
    assert rc == 1  # the bad photos failed
    assert "2 photo(s) done, 0 already done, 5 failed" in capsys.readouterr().out

    def results(out):
        return {Path(r["input"]).name: {k: r.get(k) for k in ("status", "outputs", "error", "faces")}
                for r in _manifest(out)}

    by_engine = results(ray_out)
    assert by_engine.pop("second.jpg") == {"status": "ok", "outputs": ["second_age-2.png", "second_age+2.png"],
                                           "error": None, "faces": 1}
    assert by_engine == results(local_run)  # same records, failures with the same reasons
    assert "too large" in by_engine["huge.png"]["error"] or "limit is 50 MP" in by_engine["huge.png"]["error"]
    assert "truncated" in by_engine["broken.jpg"]["error"] and "not an image" in by_engine["notes.png"]["error"]
    assert "no face found in blank.png" in by_engine["blank.png"]["error"]
    # byte-equal outputs: both engines, and the photo read from a URL (a copy of the same photo)
    for label in ("-2", "+2"):
        assert (ray_out / f"astronaut_age{label}.png").read_bytes() == reference[label]
        assert (ray_out / f"second_age{label}.png").read_bytes() == reference[label]
    ok = [r for r in _manifest(ray_out) if r["status"] == "ok"]
    assert all(set(r["times"]) == {"load", "detect", "invert", "edit", "write"} for r in ok)
    assert json.loads((ray_out / "options.json").read_text())["engine"] == "ray"

    # A rerun skips what is done (nothing for Ray to do: it is not even started).
    before = {p.name: p.stat().st_mtime_ns for p in ray_out.glob("*.png")}
    assert cli.main(["age", str(photos / "astronaut.jpg"), f"file://{more}/second.jpg", "--out", str(ray_out),
                     "--model", model, "--strengths", "-2,2", "--engine", "ray", *FAST]) == 0
    assert "0 photo(s) done, 2 already done, 0 failed" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in ray_out.glob("*.png")} == before


def _wait_for(predicate, proc_alive, what: str, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        assert proc_alive(), f"the run ended before {what}"
        time.sleep(0.05)
    pytest.fail(f"the run never reached {what}")


def _check_finished(out: Path, names, reference):
    """Each photo recorded once, ok; each output there once, complete, the local engine's bytes; no temporaries."""
    records = _manifest(out)
    assert sorted(Path(r["input"]).name for r in records) == sorted(f"{n}.jpg" for n in names)
    assert all(r["status"] == "ok" for r in records)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{n}_age+2.png" for n in names] + ["manifest.jsonl", "options.json"])
    for n in names:
        assert (out / f"{n}_age+2.png").read_bytes() == reference["+2"]


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_nothing_is_written_twice(ray_session, model, reference, tmp_path,
                                                                  monkeypatch):
    src = _copies(tmp_path / "in", ["a", "b"])
    out = tmp_path / "out"
    monkeypatch.setenv("FACEAPP_TEST_SLEEP", "1.5")  # forwarded to the workers: widens the kill window
    rc = []
    run = threading.Thread(target=lambda: rc.append(cli.main(
        ["age", str(src), "--out", str(out), "--model", model, "--strengths", "2", "--engine", "ray",
         "--workers", "1", *FAST])))
    run.start()
    try:
        # kill the worker while it writes the first output: its PID is in the temporary file's name
        tmp = _wait_for(lambda: next(iter(out.glob(".?_age+2.tmp-*.png")), None), run.is_alive, "a first output")
        pid = int(tmp.name.split(".tmp-")[1].split("-")[0])
        assert pid != os.getpid()
        os.kill(pid, signal.SIGKILL)
    finally:
        run.join(300)
    assert rc == [0]
    _check_finished(out, "ab", reference)
    worker = {Path(r["input"]).stem: int(r["worker"].rsplit(":", 1)[1]) for r in _manifest(out)}
    assert worker[tmp.name[1]] != pid  # its photo was redone by the replacement worker


@pytest.mark.slow
def test_a_killed_driver_resumes_from_the_manifest(ray_session, model, reference, tmp_path, capsys):
    src = _copies(tmp_path / "in", ["a", "b"])
    out = tmp_path / "out"
    address = ray_session.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "faceapp", "age", str(src), "--out", str(out), "--model", model,
           "--strengths", "2", "--engine", "ray", "--address", address, "--workers", "1", *FAST]
    env = {**os.environ, "FACEAPP_TEST_SLEEP": "1.5", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        manifest = out / "manifest.jsonl"
        _wait_for(lambda: manifest.is_file() and manifest.read_text().strip(), lambda: proc.poll() is None,
                  "its first record")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    (first,) = _manifest(out)
    made = {p.name: p.stat().st_mtime_ns for p in out.glob("?_age+2.png")}

    assert cli.main(["age", str(src), "--out", str(out), "--model", model, "--strengths", "2", "--engine", "ray",
                     "--workers", "1", *FAST]) == 0
    assert "1 photo(s) done, 1 already done, 0 failed" in capsys.readouterr().out
    _check_finished(out, "ab", reference)
    done = f"{Path(first['input']).stem}_age+2.png"
    assert (out / done).stat().st_mtime_ns == made[done]  # the recorded photo was not made again
