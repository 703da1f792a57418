"""The app's settings: environment variables read once at import, and the sizes of what it shows."""

import os
from pathlib import Path

#: The repository (app.py's folder): the example photos live in examples/ there.
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
#: Photos larger than this are refused before decoding (a 24 MP phone photo passes).
MAX_PIXELS = int(os.environ.get("FACEAPP_MAX_PIXELS", 40_000_000))
#: Uploads larger than this are refused by Gradio before they are stored.
MAX_UPLOAD = os.environ.get("FACEAPP_MAX_UPLOAD", "30mb")
#: How many heavy steps (detection, inversion, timelines) run at once; 1 suits a 2-core CPU Space.
HEAVY_CONCURRENCY = int(os.environ.get("FACEAPP_CONCURRENCY", 1))
#: Seconds a session's state lives after its last use (closed tabs are cleaned at once).
SESSION_TTL = int(os.environ.get("FACEAPP_SESSION_TTL", 3600))
#: Bytes of inversions one session may keep (a 'best' inversion holds a tuned copy of G).
SESSION_CACHE_BYTES = int(float(os.environ.get("FACEAPP_SESSION_CACHE_MB", 256)) * 2**20)
#: Timeline frames are downscaled to at most this side.
TIMELINE_SIDE = 512
TIMELINE_FRAMES = 10
#: Generated faces are shown (and edited) at least this large.
GENERATED_SIDE = 512
