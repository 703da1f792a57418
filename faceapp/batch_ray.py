"""`python -m faceapp age --engine ray`: the age command's photos on a pool of Ray workers.

Ray Data reads the photos (local files, or object-store URLs such as s3://bucket/photos/); a pool of actors,
each of which loads the model once, runs `faceapp.batch.age_photo` on them (the local engine's own function, so
both engines write the same pixels) and writes the outputs with the same atomic writes. The driver is the only
writer of manifest.jsonl: it appends each photo's record as the results stream back, so a driver killed and
rerun resumes from the manifest exactly as the local engine does.

Faults: a worker process that dies is restarted by Ray and its photo retried (up to `TASK_RETRIES` times);
a photo that still cannot be done (unreadable, or it kept killing its worker) is recorded as failed, never
stops the job. Each photo is recorded once even when Ray hands it back twice; outputs are named by photo and
strength and written atomically, so a retry replaces a file with the same file and never leaves half of one.

Ray is imported only when this engine runs (`pip install 'faceapp[ray]'`): `faceapp` imports without it.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from faceapp.errors import FaceAppError

__all__ = ["RAY_INSTALL", "age_on_ray", "list_urls", "require_ray"]

RAY_INSTALL = "pip install 'faceapp[ray]' (or: pip install 'ray[data]==2.60.0')"
TASK_RETRIES = 3  # per photo after its worker died: a photo that kills every worker must not loop forever
MAX_BLOCKS = 10_000  # one photo per Ray Data block up to this many (a retry redoes one photo); past it, a few each
LOG_HINT = "the Ray logs: /tmp/ray/session_latest/logs on the head node"


def require_ray(*, local: bool = False):
    """The `ray` module; FaceAppError saying how to install it when Ray (with Ray Data) is missing.

    local: a local instance will be started; it then listens on 127.0.0.1 only (Ray binds the machine's network
    address otherwise, opening its ports to the network). Takes effect only before Ray's first import.
    """
    if local and "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray's switch for a loopback-only node
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data is the [data] extra: check it too)
    except ImportError as e:
        raise FaceAppError(f"--engine ray needs Ray, which is not installed here ({e}): {RAY_INSTALL}") from e
    return ray


def list_urls(urls: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Object-store inputs -> (photo URLs, [(url, why) that matched nothing]).

    A folder URL (s3://bucket/photos/, gs://..., file:///...) gives its image files, sorted; a file URL itself.
    Listed with pyarrow's filesystems, the ones Ray Data reads with (credentials from the usual environment).
    """
    require_ray()  # pyarrow comes with ray[data]
    import pyarrow
    import pyarrow.fs as pafs

    from faceapp.batch import IMAGE_SUFFIXES

    found, missing = [], []
    for url in urls:
        scheme = urlsplit(url).scheme
        try:
            fs, path = pafs.FileSystem.from_uri(url)
            info = fs.get_file_info(path)
            if info.type == pafs.FileType.File:
                found.append(url)
            elif info.type == pafs.FileType.Directory:
                files = sorted(
                    i.path for i in fs.get_file_info(pafs.FileSelector(path))
                    if i.type == pafs.FileType.File and PurePosixPath(i.path).suffix.lower() in IMAGE_SUFFIXES
                )
                if not files:
                    missing.append((url, "folder holds no image files"))
                found += [f"{scheme}://{p}" if scheme != "file" else f"file://{p}" for p in files]
            else:
                missing.append((url, "no such file or folder"))
        except (pyarrow.ArrowException, OSError, ValueError) as e:
            missing.append((url, f"cannot list it: {e}"))
    return found, missing


def _row_path(source: str) -> str:
    """The path Ray Data reports for `source`: a local path as given, a URL without its scheme (and host for
    file://)."""
    if "://" not in source:
        return source
    u = urlsplit(source)
    return u.path if u.scheme == "file" else u.netloc + u.path


class _AgeWorker:
    """One Ray actor: loads the model once, then ages the photos Ray Data hands it, one per batch."""

    def __init__(self, job, model: str, device: str, steps: int | None, stems: dict[str, str]):
        import torch

        from faceapp.batch import make_editor

        self.editor = make_editor(model, device=device, steps=steps)
        # One core per worker: a pool of single-threaded workers beats threads on small models (default_threads).
        torch.set_num_threads(1)
        if self.editor.bundle.model_id != job.model_id:
            raise FaceAppError(
                f"this worker's model {model!r} is not the driver's (model id {self.editor.bundle.model_id} vs "
                f"{job.model_id}): put the bundle on storage every node sees, or use a Hugging Face Hub repo id"
            )
        self.job, self.stems = job, stems

    def __call__(self, batch: dict) -> dict:
        from faceapp.batch import age_photo

        paths = [str(p) for p in batch["path"]]
        records = []
        for path, data in zip(paths, batch["bytes"]):
            name = PurePosixPath(path).name
            stem = self.stems.get(path) or PurePosixPath(path).stem
            result = age_photo(self.editor, bytes(data), self.job, stem=stem, name=name)
            result["worker"] = f"{os.uname().nodename}:{os.getpid()}"
            records.append(json.dumps(result))
        return {"path": paths, "record": records}


def _connect(ray, address: str | None) -> bool:
    """Join the cluster at `address`, or start a local Ray instance on this machine's cores; True when this
    call connected (so the caller disconnects)."""
    import logging

    if ray.is_initialized():  # a caller's own session (a notebook, a test): use it as it is
        return False
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                  configure_logging=True)
    if address and address != "auto":  # fail in seconds where Ray would retry an unreachable address for minutes
        import socket

        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
        except (OSError, ValueError) as e:
            raise FaceAppError(f"no Ray cluster answers at {address} ({e}): start one there with "
                               "`ray start --head`, or leave out --address to start a local one") from e
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise FaceAppError(f"could not start or join {where}: {e}") from e
    return True


def _worker_env() -> dict[str, str]:
    """Environment for the workers: the driver's faceapp / Hub settings, one OpenMP thread, and faceapp's source
    folder on the path (a cluster started with `ray start` elsewhere does not see the driver's checkout)."""
    import faceapp

    env = {k: v for k, v in os.environ.items() if k.startswith(("FACEAPP_", "HF_"))}
    env["OMP_NUM_THREADS"] = "1"
    src = os.path.dirname(os.path.dirname(os.path.abspath(faceapp.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    return env


def age_on_ray(
    todo: Sequence[tuple[object, str, str]],
    job,
    *,
    model: str,
    device: str = "cpu",
    steps: int | None = None,
    address: str | None = None,
    workers: int | None = None,
) -> Iterator[tuple[str, dict]]:
    """Age `todo` = [(photo path or URL, manifest key, output stem)] on Ray; yields (key, result) per photo as
    the workers finish them (any order), each key exactly once, then a failure for each photo Ray could not do.

    model/device/steps: as the CLI's (each worker loads `model` itself: a path every node sees, or a Hub id).
    address: a Ray cluster to join (HOST:PORT or 'auto'); None starts a local instance on this machine's cores.
    workers: actors in the pool (default: one per CPU, or per GPU with a cuda device, of the cluster).
    """
    if not todo:
        return
    ray = require_ray(local=not address)
    import logging

    from ray.data import ActorPoolStrategy, DataContext

    connected = _connect(ray, address)
    try:
        gpu = str(device).startswith("cuda")
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get("GPU" if gpu else "CPU", 1)))
        if workers < 1:
            raise FaceAppError(f"--workers must be at least 1, not {workers}")
        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False  # the CLI shows its own bar
        ctx.max_errored_blocks = -1  # a block that still fails after retries is dropped and recorded, not fatal
        logging.getLogger("ray.data").setLevel(logging.ERROR)

        by_path, stems, groups = {}, {}, {}
        for source, key, stem in todo:
            src = source if isinstance(source, str) else key  # local files by absolute path
            path = _row_path(src)
            by_path[path] = key
            if stem != PurePosixPath(path).stem:  # shared stems (and symlinks) only: the workers' default is the name
                stems[path] = stem
            groups.setdefault(urlsplit(src).scheme if "://" in src else "", []).append(src)
        parts = [
            # Reads take no CPU slot: the workers hold them all, and a read waiting for one would wait forever.
            ray.data.read_binary_files(srcs, include_paths=True, ignore_missing_paths=True, num_cpus=0,
                                       override_num_blocks=min(len(srcs), MAX_BLOCKS))
            for srcs in groups.values()
        ]
        ds = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
        with warnings.catch_warnings():
            # Ray 2.60 has no named parameter for task retries yet, only the deprecated **ray_remote_args.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
            ds = ds.map_batches(
                _AgeWorker,
                fn_constructor_kwargs=dict(job=job, model=model, device=device, steps=steps, stems=stems),
                batch_size=1,
                compute=ActorPoolStrategy(size=workers),
                num_cpus=1,
                num_gpus=1 if gpu else 0,
                runtime_env={"env_vars": _worker_env()},
                max_restarts=-1,
                max_task_retries=TASK_RETRIES,
            )
        seen = set()
        try:
            # Whole blocks, no prefetch: each record reaches the manifest as soon as its photo is done (iter_rows
            # holds a block back until the next one comes, so a killed driver would lose finished photos).
            for batch in ds.iter_batches(batch_size=None, prefetch_batches=0):
                for path, record in zip(batch["path"], batch["record"]):
                    key = by_path.get(str(path))
                    if key is None or key in seen:  # a block retried after part of it came back: recorded already
                        continue
                    seen.add(key)
                    yield key, json.loads(record)
        except FaceAppError:
            raise
        except Exception as e:  # Ray's own failures (a worker that cannot load the model, a lost cluster)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise FaceAppError(
                f"the Ray job stopped: {first} ({len(seen)} photo(s) were done and recorded; details in {LOG_HINT}; "
                "a rerun goes on from the manifest)"
            ) from e
        for _, key, _ in todo:
            if key not in seen:
                yield key, {"status": "failed", "seconds": 0.0, "error": (
                    "not done: Ray could not read it, or its worker died on it repeatedly (details in "
                    f"{LOG_HINT}); a rerun tries it again")}
        _remove_stale_temporaries(job.out)
    finally:
        if connected:
            ray.shutdown()


def _remove_stale_temporaries(out: str) -> None:
    """Temporary files of workers killed mid-write (every worker is done when this runs)."""
    from pathlib import Path

    for stale in Path(out).glob(".*.tmp-*"):
        stale.unlink(missing_ok=True)
