"""The app's latency on CPU (upload -> first result, slider -> new result, in ms) and a load test.

Drives a launched app through gradio_client (HTTP, queue and all), the way the page does: an upload
runs /load_photo (decode, detect) and then /edit (align, invert, render, paste back); a slider runs
/edit alone (the session's inversion is re-used). Uses models/demo/ when it holds a bundle, else the
untrained stand-in (labelled as such in the output: its inversion runs fewer steps, so its figures
say little about a real model).

    .venv/bin/python -m bench.app [--model PATH|USER/REPO] [--photo tests/data/astronaut.jpg] [--repeats 3]
    .venv/bin/python -m bench.app --load 16 --edits 5   # + 16 concurrent visitors, 5 edits each

The load test: N visitors at once, each uploading its own photo (the test photo with the visitor's own
coloured mark in a corner) and making E edits. It checks that every call is answered and that every result
carries its own visitor's mark (no session sees another's photo), and prints the server's memory (RSS)
before, at the peak and after the sessions closed.
"""

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("FACEAPP_MODEL"))
    parser.add_argument("--photo", default=str(ROOT / "tests" / "data" / "astronaut.jpg"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mode", default="fast", choices=("fast", "balanced", "best"))
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: faceapp.pipeline.default_threads)")
    parser.add_argument("--load", type=int, default=0, metavar="N", help="also run N concurrent visitors")
    parser.add_argument("--edits", type=int, default=5, help="edits per visitor in the load test")
    parser.add_argument("--rounds", type=int, default=1, help="load-test rounds (memory must not grow per round)")
    parser.add_argument("--skip-latency", action="store_true", help="only the load test")
    args = parser.parse_args(argv)

    import torch
    from gradio_client import Client, handle_file

    import app
    from faceapp.pipeline import default_threads

    bundle = app.resolve_model(args.model)
    torch.set_num_threads(args.threads or default_threads(bundle.resolution))
    editor = app.make_editor(bundle)
    label = "UNTRAINED STAND-IN (random weights, short inversion)" if bundle.untrained else bundle.name
    demo = app.build_demo(editor)
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    n_sliders = len(editor.direction_names)

    def edit_args(age):
        return ("Face 1", args.mode, "difference", False, age, *([0] * (n_sliders - 1)))

    upload, slider, load = [], [], None
    try:
        # warm-up: loads dlib's models and the perceptual net once, as the first visitor would
        warm = Client(demo.local_url, verbose=False)
        warm.predict(handle_file(args.photo), api_name="/load_photo")
        warm.predict(*edit_args(0), api_name="/edit")

        values = (-2.0, -1.0, 1.0, 2.0)
        for _ in range(0 if args.skip_latency else args.repeats):
            client = Client(demo.local_url, verbose=False)  # a new visitor: nothing cached
            t0 = time.perf_counter()
            client.predict(handle_file(args.photo), api_name="/load_photo")
            client.predict(*edit_args(0), api_name="/edit")
            upload.append((time.perf_counter() - t0) * 1000)
            for v in values:
                t0 = time.perf_counter()
                client.predict(*edit_args(v), api_name="/edit")
                slider.append((time.perf_counter() - t0) * 1000)
        if args.load:
            load = "\n".join(f"round {r + 1}: " + load_test(demo, app, args, edit_args) for r in range(args.rounds))
    finally:
        demo.close()

    res = bundle.resolution
    print(f"model: {label} ({res}x{res}, encoder: {'yes' if bundle.encoder is not None else 'no'})")
    print(f"photo: {Path(args.photo).name}, mode: {args.mode}, torch threads: {torch.get_num_threads()}, "
          f"cores: {os.cpu_count()}")
    if upload:
        print(f"upload -> first result: median {statistics.median(upload):8.0f} ms  (n={len(upload)}, "
              f"min {min(upload):.0f}, max {max(upload):.0f})")
        print(f"slider -> new result:   median {statistics.median(slider):8.0f} ms  (n={len(slider)}, "
              f"min {min(slider):.0f}, max {max(slider):.0f})")
    if load:
        print(load)


def rss_mb() -> float:
    """This process's resident memory in MB (Linux /proc)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def load_test(demo, app, args, edit_args) -> str:
    """N visitors at once, each with its own photo and E edits; returns the report line (raises on a failure)."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from gradio_client import Client, handle_file
    from PIL import Image

    tmp = Path(tempfile.mkdtemp(prefix="faceapp-load-"))
    base = Image.open(args.photo).convert("RGB")
    corner = (0, base.height - 60, 60, base.height)
    photos = []
    for i in range(args.load):
        im = base.copy()
        im.paste((37 * i % 256, 255 - 23 * i % 256, 91 * i % 256), corner)
        photos.append(tmp / f"visitor-{i:02d}.png")
        im.save(photos[-1])
    peak = [rss_mb()]
    before = peak[0]
    stop = threading.Event()

    def watch():
        while not stop.wait(0.2):
            peak[0] = max(peak[0], rss_mb())

    def visit(i):
        client = Client(demo.local_url, verbose=False)
        mine = np.asarray(Image.open(photos[i]))[corner[1]:, :60]
        answered, own, seconds = 0, 0, []
        client.predict(handle_file(str(photos[i])), api_name="/load_photo")
        for k in range(args.edits):
            t0 = time.perf_counter()
            result, status, *_ = client.predict(*edit_args(k - args.edits // 2), api_name="/edit")
            seconds.append(time.perf_counter() - t0)
            answered += status.startswith("Done")
            own += np.array_equal(np.asarray(Image.open(result).convert("RGB"))[corner[1]:, :60], mine)
        return answered, own, seconds

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.load) as pool:
        results = list(pool.map(visit, range(args.load)))
    wall = time.perf_counter() - t0
    live = len(app._sessions)
    for key in list(app._sessions):  # what closing the tabs does
        app.end_session(type("R", (), {"session_hash": key})())
    import gc

    gc.collect()
    time.sleep(1)
    stop.set()
    after = rss_mb()
    calls = args.load * args.edits
    answered = sum(r[0] for r in results)
    own = sum(r[1] for r in results)
    lat = sorted(s for r in results for s in r[2])
    line = (f"load test: {args.load} visitors x {args.edits} edits: {answered}/{calls} answered, {own}/{calls} "
            f"results with the visitor's own photo; {wall:.1f} s wall; edit latency median {lat[len(lat) // 2]:.2f} s,"
            f" max {lat[-1]:.2f} s; server RSS {before:.0f} MB before, {peak[0]:.0f} MB peak, {after:.0f} MB after "
            f"({live} sessions closed)")
    if answered != calls or own != calls:
        raise SystemExit(line + "  FAILED")
    return line


if __name__ == "__main__":
    main()
