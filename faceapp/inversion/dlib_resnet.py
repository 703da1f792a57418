"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) as a torch module.

The weights are read at run time from the CC0 file shipped by the
``face-recognition-models`` package; nothing is committed or downloaded here.

The .dat file is dlib's own serialisation of
``loss_metric<fc_no_bias<128, avg_pool_everything<alevel0<...<max_pool<relu<affine<con<32,7,7,2,2,
input_rgb_image_sized<150>>>>>>>>>`` (dlib examples/dnn_face_recognition_ex.cpp). How dlib writes it:

- ints: one header byte (low nibble = number of payload bytes, bit 7 = negative) then the
  magnitude little-endian; floats/doubles: (mantissa int64, exponent int16) as two such ints;
  strings: length int then raw bytes; bools: ASCII '0' / '1';
- tensors: version int (2), num_samples, k, nr, nc ints, then raw little-endian float32;
  alias tensors: version int (1) and four dims, no data;
- networks: each wrapper writes its version int and then its sub-network *before* its own layer
  details, so the file holds every version number outermost-first, then the input layer, then the
  layer details innermost-first. tag/skip wrappers write only a version (1): their ids are not in
  the file, so the graph is rebuilt from the known architecture and every layer is checked
  against it.

The port follows dlib's arithmetic exactly: stride-2 convolutions and pools have no padding
(stride-1 3x3 convolutions pad 1), residual additions of tensors of different sizes zero-pad the
smaller one at the end of each dimension (dlib's ``tt::add``), and the input is
``(pixel - channel_mean) / 256``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from faceapp.errors import CheckpointError, ModelUnavailableError

__all__ = [
    "DlibFaceResNet",
    "DlibLayer",
    "default_model_path",
    "from_minus1_1",
    "load_dlib_face_resnet",
    "read_dlib_metric_net",
]

INPUT_SIZE = 150  # dlib's aligned chip: get_face_chip(img, shape, size=150, padding=0.25)
SAME_PERSON_DISTANCE = 0.6  # dlib's threshold on the euclidean distance of two descriptors

# residual stages innermost-first as (channels, number of blocks, first block downsamples)
_STAGES = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))

_FLOAT_SPECIAL = {32000: math.inf, 32001: -math.inf, 32002: math.nan}


@dataclass
class DlibLayer:
    """One computational layer read from a dlib network file.

    kind: 'input', 'con', 'affine', 'relu', 'max_pool', 'avg_pool', 'add_prev', 'fc'
    attrs: geometry (filters, kernel, stride, padding, means, ...)
    tensors: float32 arrays (conv weight [O,I,kh,kw], bias [O], affine gamma/beta [C], fc weight [in,out])
    """

    kind: str
    attrs: dict = field(default_factory=dict)
    tensors: dict = field(default_factory=dict)


class _Reader:
    """Cursor over the bytes of a dlib-serialised file; every malformed read raises CheckpointError."""

    def __init__(self, data: bytes, name: str):
        self.data = data
        self.pos = 0
        self.name = name

    def fail(self, what: str) -> CheckpointError:
        return CheckpointError(
            f"{self.name}: not a dlib face-recognition ResNet file ({what} at byte {self.pos}); "
            "reinstall face-recognition-models or pass the path of dlib_face_recognition_resnet_model_v1.dat"
        )

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail("unexpected end of file")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def peek(self, n: int = 1) -> bytes:
        return self.data[self.pos : self.pos + n]

    def int(self) -> int:
        head = self.take(1)[0]
        size = head & 0x0F
        if size > 8 or head & 0x70:
            raise self.fail(f"bad integer header 0x{head:02x}")
        value = int.from_bytes(self.take(size), "little")
        return -value if head & 0x80 else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        if exponent in _FLOAT_SPECIAL:
            return _FLOAT_SPECIAL[exponent]
        return math.ldexp(mantissa, exponent)

    def str(self, limit: int = 256) -> str:
        n = self.int()
        if not 0 <= n <= limit:
            raise self.fail(f"string of length {n}")
        raw = self.take(n)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail("non-ASCII string") from None

    def bool(self) -> bool:
        ch = self.take(1)
        if ch not in (b"0", b"1"):
            raise self.fail(f"bad bool {ch!r}")
        return ch == b"1"

    def dims(self) -> tuple[int, int, int, int]:
        dims = tuple(self.int() for _ in range(4))
        if any(d < 0 for d in dims) or math.prod(dims) > 1 << 28:
            raise self.fail(f"bad tensor shape {dims}")
        return dims

    def tensor(self) -> np.ndarray:
        if self.int() != 2:
            raise self.fail("unknown tensor version")
        dims = self.dims()
        raw = self.take(4 * math.prod(dims))
        return np.frombuffer(raw, dtype="<f4").reshape(dims).astype(np.float32)

    def alias(self) -> tuple[int, int, int, int]:
        if self.int() != 1:
            raise self.fail("unknown alias_tensor version")
        return self.dims()

    def peek_string(self) -> str | None:
        """The string starting at the cursor, if one plausibly does (used to tell wrapper kinds apart)."""
        save = self.pos
        try:
            n = self.int()
            if not 1 <= n <= 64:
                return None
            raw = self.take(n)
            return raw.decode("ascii") if all(32 < b < 127 for b in raw) else None
        except CheckpointError:
            return None
        finally:
            self.pos = save


def _read_details(r: _Reader) -> DlibLayer:
    """One layer's own serialisation (the `details` of an add_layer)."""
    name = r.str()
    if name.startswith("input_rgb_image"):
        means = [r.float(), r.float(), r.float()]
        attrs = {"means": means}
        if name == "input_rgb_image_sized":
            attrs["size"] = (r.int(), r.int())
        return DlibLayer("input", attrs)
    if name in ("con_4", "con_5"):
        params = r.tensor().reshape(-1)
        num_filters, nr, nc, sy, sx, py, px = (r.int() for _ in range(7))
        fdims, bdims = r.alias(), r.alias()
        for _ in range(4):  # learning-rate / weight-decay multipliers: training only
            r.float()
        use_bias = r.bool() if name == "con_5" else True
        nw = math.prod(fdims)
        if fdims[0] != num_filters or params.size != nw + (math.prod(bdims) if use_bias else 0):
            raise r.fail(f"con_ parameter size {params.size} does not match filters {fdims}")
        tensors = {"weight": params[:nw].reshape(fdims)}
        if use_bias:
            tensors["bias"] = params[nw:]
        return DlibLayer("con", {"kernel": (nr, nc), "stride": (sy, sx), "padding": (py, px)}, tensors)
    if name == "affine_":
        params = r.tensor().reshape(-1)
        gdims, bdims = r.alias(), r.alias()
        mode = r.int() if r.peek() not in (b"0", b"1") else 0  # older files have no mode; 0 = CONV_MODE
        n = math.prod(gdims)
        if params.size != n + math.prod(bdims) or mode != 0:
            raise r.fail("affine_ is not a per-channel (CONV_MODE) layer")
        return DlibLayer("affine", {}, {"gamma": params[:n], "beta": params[n:]})
    if name == "relu_":
        return DlibLayer("relu")
    if name == "add_prev_":
        return DlibLayer("add_prev")
    if name in ("max_pool_2", "avg_pool_2"):
        nr, nc, sy, sx, py, px = (r.int() for _ in range(6))
        attrs = {"kernel": (nr, nc), "stride": (sy, sx), "padding": (py, px)}
        return DlibLayer(name[:8], attrs)
    if name == "fc_2":
        num_outputs, num_inputs = r.int(), r.int()
        params = r.tensor().reshape(-1)
        wdims = r.alias()
        r.alias()
        bias_mode = r.int()
        for _ in range(4):
            r.float()
        if bias_mode != 1 or params.size != num_inputs * num_outputs or math.prod(wdims) != params.size:
            raise r.fail("fc_ is not the expected fc_no_bias layer")
        return DlibLayer("fc", {}, {"weight": params.reshape(num_inputs, num_outputs)})
    raise r.fail(f"unsupported layer '{name}'")


def _read_net(r: _Reader, layers: list[DlibLayer]) -> None:
    """Read one (sub-)network; append its layers innermost-first; tag/skip wrappers become 'marker'."""
    version = r.int()
    nested = r.peek_string() is None  # a wrapper around another network, not around the input layer
    if version == 1 and nested:  # add_tag_layer / add_skip_layer: version and sub-network only
        _read_net(r, layers)
        layers.append(DlibLayer("marker"))
        return
    if version == 2 and nested:  # add_layer over a computational sub-network
        _read_net(r, layers)
        layers.append(_read_details(r))
        for _ in range(3):
            r.bool()
        for _ in range(3):  # x_grad, cached_output, params_grad: training state, ignored
            r.tensor()
        return
    if version in (2, 3) and not nested:  # add_layer directly over the input layer
        layers.append(_read_details(r))
        layers.append(_read_details(r))
        for _ in range(3):
            r.bool()
        for _ in range(3):  # x_grad, cached_output, grad_final
            r.tensor()
        if version == 3:
            r.int()  # sample_expansion_factor
        return
    raise r.fail(f"unknown network wrapper version {version}")


def read_dlib_metric_net(path: str | os.PathLike) -> tuple[dict, list[DlibLayer]]:
    """Parse a dlib ``loss_metric`` network file.

    Returns (loss attributes {'margin', 'dist_thresh'}, layers innermost-first, the input layer
    first, tag/skip wrappers as kind 'marker'). Raises CheckpointError for anything malformed.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CheckpointError(f"cannot read dlib model {path}: {e}") from e
    r = _Reader(data, path)
    if r.int() != 1:
        raise r.fail("unknown loss-layer version")
    name = r.str()
    if name == "loss_metric_2":
        loss = {"margin": r.float(), "dist_thresh": r.float()}
    elif name == "loss_metric_":
        loss = {"margin": 0.04, "dist_thresh": 0.6}  # the values dlib hard-coded before version 2
    else:
        raise r.fail(f"loss layer '{name}' is not loss_metric")
    layers: list[DlibLayer] = []
    try:
        _read_net(r, layers)
    except RecursionError:
        raise r.fail("network nested too deeply") from None
    if r.pos != len(data):
        raise r.fail(f"{len(data) - r.pos} trailing bytes")
    return loss, layers


def _expected_kinds() -> list[str]:
    """Layer kinds of dnn_face_recognition_ex.cpp's anet_type, innermost-first (as read from the file)."""
    kinds = ["input", "con", "affine", "relu", "max_pool"]
    for _, n_blocks, down in _STAGES:
        for i in range(n_blocks):
            body = ["marker", "con", "affine", "relu", "con", "affine"]  # tag1, then the block
            if down and i == 0:
                body += ["marker", "marker", "avg_pool"]  # tag2, skip1, avg_pool
            kinds += body + ["add_prev", "relu"]
    return kinds + ["avg_pool", "fc"]


class DlibFaceResNet(nn.Module):
    """dlib's 29-layer face-recognition ResNet; forward(img [N,3,150,150] RGB in [0,255]) -> [N,128].

    Differentiable in its input. Build it with ``load_dlib_face_resnet``. The weights are
    parameters with requires_grad=False (a frozen feature extractor that still follows
    .to(device) / .double() and shows in state_dict()).
    """

    def __init__(self, layers: list[DlibLayer], margin: float = 0.04, dist_thresh: float = SAME_PERSON_DISTANCE):
        super().__init__()
        kinds = [layer.kind for layer in layers]
        if kinds != _expected_kinds():
            raise CheckpointError(
                "the dlib network does not have the architecture of dlib_face_recognition_resnet_model_v1 "
                f"({len(kinds)} layers read, {len(_expected_kinds())} expected)"
            )
        self.dist_thresh = dist_thresh
        self.margin = margin
        comp = [layer for layer in layers if layer.kind != "marker"]
        it = iter(comp)
        inp = next(it)
        if tuple(inp.attrs.get("size", (INPUT_SIZE, INPUT_SIZE))) != (INPUT_SIZE, INPUT_SIZE):
            raise CheckpointError(f"dlib network expects {inp.attrs['size']} inputs, not 150x150")
        self.register_buffer("mean", torch.tensor(inp.attrs["means"], dtype=torch.float32).view(1, 3, 1, 1))

        def conv_affine(conv: DlibLayer, aff: DlibLayer) -> nn.ParameterDict:
            # dlib layer kinds must line up before we trust the weights
            if conv.kind != "con" or aff.kind != "affine":
                raise CheckpointError("unexpected layer order in the dlib network")
            w = torch.from_numpy(conv.tensors["weight"].copy())
            b = torch.from_numpy(conv.tensors.get("bias", np.zeros(w.shape[0], np.float32)).copy())
            g = torch.from_numpy(aff.tensors["gamma"].copy())
            beta = torch.from_numpy(aff.tensors["beta"].copy())
            if not (b.numel() == g.numel() == beta.numel() == w.shape[0]):
                raise CheckpointError("dlib network: convolution and affine sizes disagree")
            p = nn.ParameterDict(
                {
                    k: nn.Parameter(v, requires_grad=False)
                    for k, v in {"weight": w, "bias": b, "gamma": g, "beta": beta}.items()
                }
            )
            return p

        self.stem = conv_affine(next(it), next(it))
        next(it), next(it)  # relu, max_pool 3x3 stride 2
        self.blocks = nn.ModuleList()
        self.block_strides: list[int] = []
        for _, n_blocks, down in _STAGES:
            for i in range(n_blocks):
                c1 = conv_affine(next(it), next(it))
                next(it)  # relu
                c2 = conv_affine(next(it), next(it))
                stride = 2 if down and i == 0 else 1
                if stride == 2:
                    next(it)  # avg_pool 2x2 stride 2 on the shortcut
                next(it), next(it)  # add_prev, relu
                self.blocks.append(nn.ModuleList([c1, c2]))
                self.block_strides.append(stride)
        next(it)  # avg_pool_everything
        self.fc = nn.Parameter(torch.from_numpy(next(it).tensors["weight"].copy()), requires_grad=False)  # [256,128]
        self._check_geometry(comp)

    @staticmethod
    def _check_geometry(comp: list[DlibLayer]) -> None:
        """The forward pass hard-codes dlib's kernels, strides and paddings: make sure the file agrees."""
        for layer in comp:
            a = layer.attrs
            if layer.kind == "con":
                k, s, p = a["kernel"][0], a["stride"][0], a["padding"][0]
                ok = a["kernel"][0] == a["kernel"][1] and a["stride"][0] == a["stride"][1]
                ok = ok and p == a["padding"][1] and p == (0 if s == 2 else k // 2) and k in (3, 7)
            elif layer.kind == "max_pool":
                ok = a == {"kernel": (3, 3), "stride": (2, 2), "padding": (0, 0)}
            elif layer.kind == "avg_pool":
                ok = a in (
                    {"kernel": (2, 2), "stride": (2, 2), "padding": (0, 0)},
                    {"kernel": (0, 0), "stride": (1, 1), "padding": (0, 0)},
                )
            else:
                ok = True
            if not ok:
                raise CheckpointError(f"dlib network: unexpected {layer.kind} geometry {a}")

    @staticmethod
    def _conv_affine(x: torch.Tensor, p: nn.ParameterDict, stride: int, padding: int) -> torch.Tensor:
        x = F.conv2d(x, p["weight"], p["bias"], stride=stride, padding=padding)
        return x * p["gamma"].view(1, -1, 1, 1) + p["beta"].view(1, -1, 1, 1)

    @staticmethod
    def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """dlib's add_prev: the sum has the larger size in each dimension; missing values count as 0."""
        if a.shape == b.shape:
            return a + b
        c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

        def pad(t: torch.Tensor) -> torch.Tensor:
            return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

        return pad(a) + pad(b)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """img: [N,3,150,150] RGB float in [0,255] (a dlib face chip) -> descriptors [N,128]."""
        if img.ndim != 4 or img.shape[1:] != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"expected images [N,3,150,150], got {tuple(img.shape)}")
        x = (img - self.mean) / 256.0
        x = F.relu(self._conv_affine(x, self.stem, stride=2, padding=0))  # [N,32,72,72]
        x = F.max_pool2d(x, 3, 2)  # [N,32,35,35]
        for (c1, c2), stride in zip(self.blocks, self.block_strides):
            y = F.relu(self._conv_affine(x, c1, stride=stride, padding=0 if stride == 2 else 1))
            y = self._conv_affine(y, c2, stride=1, padding=1)
            shortcut = F.avg_pool2d(x, 2, 2) if stride == 2 else x
            x = F.relu(self._add_padded(y, shortcut))
        # spatial sizes: 35 -> 17 -> 8 -> 4 (3x3 block output zero-padded) -> 2; channels 32..256
        x = x.mean(dim=(2, 3))  # [N,256]
        return x @ self.fc  # [N,128]

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Euclidean distance of descriptors [N,128] x [N,128] -> [N]; < 0.6 means 'same person' to dlib."""
        return (a - b).norm(dim=1)


def from_minus1_1(img: torch.Tensor) -> torch.Tensor:
    """Map images in [-1,1] (as a StyleGAN renders them) to the [0,255] range the network takes."""
    return (img + 1.0) * 127.5


def default_model_path() -> str:
    """The path of dlib_face_recognition_resnet_model_v1.dat from face-recognition-models (never downloads)."""
    try:
        import warnings

        with warnings.catch_warnings():  # the package imports pkg_resources, which warns on import
            warnings.simplefilter("ignore")
            import face_recognition_models
    except ImportError as e:
        raise ModelUnavailableError(
            "the identity model needs dlib's face-recognition ResNet from the 'face-recognition-models' package: "
            "pip install face-recognition-models==0.3.0 (or pass the path of dlib_face_recognition_resnet_model_v1.dat)"
        ) from e
    path = face_recognition_models.face_recognition_model_location()
    if not os.path.isfile(path):
        raise ModelUnavailableError(f"{path} is missing: reinstall face-recognition-models")
    return path


def load_dlib_face_resnet(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> DlibFaceResNet:
    """Read dlib's face-recognition ResNet from `path` (default: face-recognition-models' copy).

    Returns a frozen module in eval mode on `device`: forward(img [N,3,150,150] RGB in [0,255]) -> [N,128],
    matching ``dlib.face_recognition_model_v1(path).compute_face_descriptor(chip)``.
    Raises ModelUnavailableError if face-recognition-models is needed but missing, CheckpointError if the
    file is malformed or not this network.
    """
    if path is None:
        path = default_model_path()
    loss, layers = read_dlib_metric_net(path)
    net = DlibFaceResNet(layers, margin=loss["margin"], dist_thresh=loss["dist_thresh"])
    return net.eval().requires_grad_(False).to(device)
