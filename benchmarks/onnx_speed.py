"""A 1280×720 frame through the exported ONNX model on onnxruntime's CPU provider, against PyTorch, same run.

For each architecture (`--archs`: the paper's network, 9 blocks, and NAFNet at the pipeline's sample size),
the network is exported by `imrestore.app.export.export_onnx` (the path `imrestore export` takes), then one untiled
720p frame is restored by PyTorch (eager, float32, inference mode) and by onnxruntime, alternating, after a
warm-up of each, for `--repeats` rounds. Both get the same number of threads (`--threads`, default torch's).
Weights are the trained ones in models/<task> when they exist there for that architecture, else fresh ones
(the time does not depend on the values). The table shows the median seconds per frame, the ratio
PyTorch / onnxruntime (> 1: onnxruntime is faster) and the largest absolute difference of the two outputs.

    python benchmarks/onnx_speed.py --json build/bench/onnx.json      # most of the time is the export
    python benchmarks/onnx_speed.py --smoke                           # tiny networks on a 64² frame

Writes <out>/onnx_speed.json:
    {"benchmark": "onnx_speed", "frame": [720, 1280], "threads": n, "repeats": r,
     "archs": {"paper": {"weights": ..., "export_s": t, "torch_s": [...], "onnxruntime_s": [...],
                         "median_torch_s": t, "median_onnxruntime_s": t, "ratio_torch_over_onnxruntime": x,
                         "max_abs_difference": d}, "nafnet": {...}},
     "machine": {...}}
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from common import (REPO, add_run_arguments, alternate, machine_facts, new_table,  # first: puts src/ on sys.path
                    output_dir, timed, write_json)

from imrestore.app.export import export_onnx
from imrestore.models.network import ModelConfig, build_network, describe_network
from imrestore.models.weights import load_network

ARCHS = ("paper", "nafnet")
SMOKE_MODELS = {"paper": ModelConfig(blocks=1, features=8),
                "nafnet": ModelConfig.from_params({"arch": "nafnet", "nafnet": {"width": 4}})}


def network(arch: str, smoke: bool) -> tuple[torch.nn.Module, str]:
    """(the network, where its weights came from)."""
    if smoke:
        return build_network(SMOKE_MODELS[arch]), "fresh (smoke)"
    for task in ("deblur", "denoise"):
        folder = REPO / "models" / task
        if (folder / "model.pt").is_file():
            net = load_network(folder)
            if describe_network(net)["arch"] == arch:
                return net, str(folder.relative_to(REPO))
    return build_network(ModelConfig(arch=arch)), "fresh"


def measure(arch: str, frame: tuple[int, int], repeats: int, threads: int, smoke: bool, workdir: Path) -> dict:
    import onnxruntime

    net, weights = network(arch, smoke)
    net = net.eval()
    export_seconds = timed(lambda: export_onnx(net, workdir / f"{arch}.onnx")).wall
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = onnxruntime.InferenceSession(str(workdir / f"{arch}.onnx"), options,
                                           providers=["CPUExecutionProvider"])
    image = torch.rand(1, 3, *frame, generator=torch.Generator().manual_seed(0))
    outputs = {}

    def run_torch():
        with torch.inference_mode():
            outputs["torch"] = net(image)

    def run_onnxruntime():
        outputs["onnxruntime"] = session.run(None, {"image": image.numpy()})[0]

    samples = alternate({"torch": run_torch, "onnxruntime": run_onnxruntime}, repeats, warmup=1)
    ours, onnx = samples["torch"], samples["onnxruntime"]
    return {"weights": weights, "parameters": describe_network(net)["parameters"], "export_s": export_seconds,
            "torch_s": ours.wall, "onnxruntime_s": onnx.wall, "median_torch_s": ours.median,
            "median_onnxruntime_s": onnx.median, "ratio_torch_over_onnxruntime": ours.median / onnx.median,
            "max_abs_difference": float(np.abs(outputs["onnxruntime"] - outputs["torch"].numpy()).max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archs", nargs="+", choices=ARCHS, default=list(ARCHS))
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per runtime (default 3)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="threads for both runtimes")
    add_run_arguments(parser, "tiny networks on a 64² frame, 1 round", params=False, build=False)
    parser.add_argument("--json", type=Path, default=None, help="write the results to this file instead")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frame, repeats = ((64, 64), 1) if args.smoke else ((720, 1280), args.repeats)
    console = Console()
    with tempfile.TemporaryDirectory(prefix="imrestore-onnx-") as workdir:
        archs = {arch: measure(arch, frame, repeats, args.threads, args.smoke, Path(workdir)) for arch in args.archs}
    table = new_table(f"{frame[1]}×{frame[0]} frame, untiled, {args.threads} threads, median of {repeats}",
                      ("network", "weights", "PyTorch s", "onnxruntime s", "PyTorch / onnxruntime", "max |diff|",
                       "export s"), left=("network", "weights"))
    for arch, row in archs.items():
        table.add_row(arch, row["weights"], f"{row['median_torch_s']:.3f}", f"{row['median_onnxruntime_s']:.3f}",
                      f"{row['ratio_torch_over_onnxruntime']:.2f}", f"{row['max_abs_difference']:.1e}",
                      f"{row['export_s']:.0f}")
    console.print(table)
    results = {"benchmark": "onnx_speed", "frame": list(frame), "threads": args.threads, "repeats": repeats,
               "archs": archs, "machine": machine_facts()}
    write_json(results, args.json or output_dir(args.out, args.smoke) / "onnx_speed.json", console)


if __name__ == "__main__":
    main()
