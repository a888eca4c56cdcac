"""`imrestore export --task T --format onnx`: a trained network as an ONNX model for deployment.

The model takes float32 N×3×H×W images in [0, 1] with any batch, height and width (at least 16×16) and
returns the restoration, unclamped, the same size: the padding to the network's grid is inside the graph.
It is exported by `torch.onnx.export(dynamo=True)` (torch.export, then onnxscript) at opset 18.

The deformable convolutions export in their grid_sample form (`imrestore.models.dcn`), i.e. ONNX's standard
GridSample (opset 16) plus a MatMul, which every runtime that reads opset 18 runs; torchvision's
deform_conv2d has no exporter, and ONNX's own DeformConv (opset 19) is missing from many runtimes. The two
backends hold the same parameters and compute the same function, so any trained weights export this way.

After writing, the model is run by onnxruntime (when installed) on a random image and compared with PyTorch;
the largest difference is returned and printed (tests/test_export.py measures the tolerance).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from imrestore import atomic
from imrestore.app.outputs import check_file, writing
from imrestore.errors import ImrestoreError
from imrestore.models.dcn import DeformableConv2d
from imrestore.models.network import describe_network

OPSET = 18
MIN_SIDE = 16  # the reflect padding inside the graph needs the image larger than the pad (< 16 px)
CHECK_SHAPE = (1, 3, 48, 80)  # the check run: neither side a multiple of 16, so the padding is exercised


@dataclass(frozen=True)
class Exported:
    path: Path
    max_difference: float | None  # onnxruntime against PyTorch on one random image; None without onnxruntime


def export_onnx(net: nn.Module, out: Path, metadata: dict[str, str] | None = None) -> Exported:
    """Write `net` as an ONNX model with dynamic batch, height and width to `out` (atomically)."""
    try:
        import onnx  # noqa: F401  (torch.onnx's dynamo exporter needs onnx and onnxscript)
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ImrestoreError(f"exporting to ONNX needs the onnx and onnxscript packages ({exc.name} is missing): "
                             "pip install 'imrestore[export]'") from None
    out = Path(out)
    check_file(out, "the ONNX model file (--out)")  # now, not after the export's half minute
    net = net.eval().cpu()
    for module in net.modules():
        if isinstance(module, DeformableConv2d):
            module.backend = "grid_sample"
    example = torch.rand(2, 3, 64, 64)  # batch 2: a batch of 1 would be specialised into the graph
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height", min=MIN_SIDE),
            3: torch.export.Dim("width", min=MIN_SIDE)}
    try:
        program = torch.onnx.export(net, (example,), dynamo=True, opset_version=OPSET, input_names=["image"],
                                    output_names=["restored"], dynamic_shapes=({**dims},), verbose=False)
    except Exception as exc:  # torch.export's own errors are long; the first line says what failed
        raise ImrestoreError(f"ONNX export of {type(net).__name__} failed: {str(exc).splitlines()[0]}") from None
    proto = program.model_proto
    for key, value in {"imrestore.model": json.dumps(describe_network(net)), **(metadata or {})}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    with writing(out), atomic.atomic_file(out) as tmp:
        tmp.write_bytes(proto.SerializeToString())
    return Exported(out, check_against_torch(net, out))


def check_against_torch(net: nn.Module, onnx_path: Path, shape: tuple[int, ...] = CHECK_SHAPE) -> float | None:
    """Largest |onnxruntime − PyTorch| on one random image of `shape`; None when onnxruntime is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    image = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = net(image)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    restored = session.run(None, {"image": image.numpy()})[0]
    return float((torch.from_numpy(restored) - expected).abs().max())
