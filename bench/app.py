"""The app's latency on CPU: upload -> first result, and slider -> new result, in ms.

Drives a launched app through gradio_client (HTTP, queue and all), the way the page does: an upload
runs /load_photo (decode, detect) and then /edit (align, invert, render, paste back); a slider runs
/edit alone (the session's inversion is re-used). Uses models/demo/ when it holds a bundle, else the
untrained stand-in (labelled as such in the output: its inversion runs fewer steps, so its figures
say little about a real model).

    .venv/bin/python bench/app.py [--model PATH|USER/REPO] [--photo tests/data/astronaut.jpg] [--repeats 3]
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("FACEAPP_MODEL"))
    parser.add_argument("--photo", default=str(ROOT / "tests" / "data" / "astronaut.jpg"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mode", default="fast", choices=("fast", "balanced", "best"))
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: faceapp.pipeline.default_threads)")
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
    try:
        # warm-up: loads dlib's models and the perceptual net once, as the first visitor would
        warm = Client(demo.local_url, verbose=False)
        warm.predict(handle_file(args.photo), api_name="/load_photo")
        warm.predict("Face 1", args.mode, False, 0, 0, 0, 0, api_name="/edit")

        upload, slider = [], []
        values = (-2.0, -1.0, 1.0, 2.0)
        for _ in range(args.repeats):
            client = Client(demo.local_url, verbose=False)  # a new visitor: nothing cached
            t0 = time.perf_counter()
            client.predict(handle_file(args.photo), api_name="/load_photo")
            client.predict("Face 1", args.mode, False, 0, 0, 0, 0, api_name="/edit")
            upload.append((time.perf_counter() - t0) * 1000)
            for v in values:
                t0 = time.perf_counter()
                client.predict("Face 1", args.mode, False, v, 0, 0, 0, api_name="/edit")
                slider.append((time.perf_counter() - t0) * 1000)
    finally:
        demo.close()

    res = bundle.resolution
    print(f"model: {label} ({res}x{res}, encoder: {'yes' if bundle.encoder is not None else 'no'})")
    print(f"photo: {Path(args.photo).name}, mode: {args.mode}, torch threads: {torch.get_num_threads()}, "
          f"cores: {os.cpu_count()}")
    print(f"upload -> first result: median {statistics.median(upload):8.0f} ms  (n={len(upload)}, "
          f"min {min(upload):.0f}, max {max(upload):.0f})")
    print(f"slider -> new result:   median {statistics.median(slider):8.0f} ms  (n={len(slider)}, "
          f"min {min(slider):.0f}, max {max(slider):.0f})")


if __name__ == "__main__":
    main()
