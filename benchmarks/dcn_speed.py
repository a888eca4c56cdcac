"""Forward+backward time of `DeformableConv2d` with the grid_sample backend against torchvision's, same run.

Both layers share one state dict whose offset/mask conv is randomised (offsets of a few pixels, masks away
from 1), so the deformation is real. Each repetition runs forward, then backward of a fixed random
projection of the output, which fills the gradients of the input and of all parameters -- what a training
step pays per DCN layer. The two backends alternate, after a warm-up; the table shows the median seconds,
the ratio torchvision / grid_sample (goal: >= 5x on CPU, >= 2x on GPU) and, as a numerics check, the
largest difference of the outputs and of every gradient, relative to the largest reference value, with the
number of gradient elements beyond 1e-3 relative (float32 kink flips are isolated; a bug is not).

    python benchmarks/dcn_speed.py --json build/bench/dcn.json
    python benchmarks/dcn_speed.py --device cuda --json build/bench/dcn-gpu.json   # GPU machine

On a GPU, update `FASTEST_BACKEND["cuda"]` in src/imrestore/models/dcn.py from the ratios.
"""

from __future__ import annotations

import torch
from rich.console import Console

from common import (alternate, argument_parser, machine_facts, new_table, synchronizer,  # first: puts src/ on sys.path
                    write_json)

from imrestore.models.dcn import DeformableConv2d

BACKENDS = ("torchvision", "grid_sample")
# (batch, channels, height, width, kernel): the paper's 32-channel full-resolution head, a 128-channel
# LKA-level shape, and the GoPro model's kernel 4.
DEFAULT_SHAPES = "8x32x64x64k3,8x128x32x32k3,8x32x64x64k4"


def parse_shape(text: str) -> tuple[int, int, int, int, int]:
    dims, kernel = text.split("k")
    return (*(int(d) for d in dims.split("x")), int(kernel))


def make_layers(channels: int, kernel: int, device: torch.device) -> dict[str, DeformableConv2d]:
    torch.manual_seed(0)
    layers = {name: DeformableConv2d(channels, channels, kernel, backend=name).to(device) for name in BACKENDS}
    with torch.no_grad():  # offsets of a few pixels, masks spread over (0, 2)
        layers["torchvision"].offset_mask.weight.normal_(std=0.05)
        layers["torchvision"].offset_mask.bias.normal_(std=1.0)
    layers["grid_sample"].load_state_dict(layers["torchvision"].state_dict())
    return layers


def forward_backward(layer: DeformableConv2d, image: torch.Tensor, projection: torch.Tensor):
    """One fwd+bwd; returns the output and the gradients by name."""
    layer.zero_grad(set_to_none=True)
    image = image.detach().requires_grad_()
    output = layer(image)
    output.backward(projection)
    return output.detach(), {"input": image.grad} | {name: p.grad for name, p in layer.named_parameters()}


def measure(shape, device: torch.device, repeats: int) -> dict:
    batch, channels, height, width, kernel = shape
    layers = make_layers(channels, kernel, device)
    generator = torch.Generator(device="cpu").manual_seed(1)
    image = torch.randn(batch, channels, height, width, generator=generator).to(device)
    projection = torch.randn(batch, channels, height, width, generator=generator).to(device)

    results = {name: forward_backward(layers[name], image, projection) for name in BACKENDS}  # warm-up
    reference_out, reference_grads = results["torchvision"]
    ours_out, ours_grads = results["grid_sample"]
    differences = {"output": ours_out - reference_out} | {n: ours_grads[n] - reference_grads[n] for n in ours_grads}
    references = {"output": reference_out} | reference_grads
    # In float32 a sample within ~1 ulp of a pixel can land on the other side of bilinear interpolation's
    # kink in one backend, which flips its offset gradient to the neighbouring slope: an isolated, large
    # difference. "elements_over_1e-3" counts elements beyond 1e-3 relative, to tell that from a real bug.
    numerics = {
        name: {
            "max_abs": diff.abs().max().item(),
            "max_rel": (diff.abs().max() / references[name].abs().max()).item(),
            "elements_over_1e-3": int((diff.abs() > 1e-3 * references[name].abs().max()).sum()),
            "elements": diff.numel(),
        }
        for name, diff in differences.items()
    }

    samples = alternate({name: lambda layer=layers[name]: forward_backward(layer, image, projection)
                         for name in BACKENDS}, repeats, synchronizer(device))
    medians = {name: s.median for name, s in samples.items()}
    return {
        "shape": {"batch": batch, "channels": channels, "height": height, "width": width, "kernel": kernel},
        "seconds": {name: s.wall for name, s in samples.items()},
        "median_s": medians,
        "speedup": medians["torchvision"] / medians["grid_sample"],
        "numerics": numerics,
    }


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument(
        "--shapes", default=DEFAULT_SHAPES, help=f"BxCxHxWkK, comma-separated (default {DEFAULT_SHAPES})"
    )
    parser.add_argument("--repeats", type=int, default=5, help="fwd+bwd runs of each backend, alternating (default 5)")
    args = parser.parse_args()

    console = Console()
    device = torch.device(args.device)
    rows = []
    for text in args.shapes.split(","):
        console.print(f"measuring {text} on {device} ...")
        rows.append(measure(parse_shape(text), device, args.repeats))

    goal = 5.0 if device.type == "cpu" else 2.0
    table = new_table(f"DeformableConv2d fwd+bwd on {device}: grid_sample vs torchvision (median of {args.repeats})",
                      ("B×C×H×W, k", "torchvision s", "grid_sample s", "speedup", f"goal ≥ {goal:g}×",
                       "max rel diff (output)", "max rel diff (gradients)", "grad elements > 1e-3"))
    for row in rows:
        s = row["shape"]
        worst_grad = max(v["max_rel"] for n, v in row["numerics"].items() if n != "output")
        table.add_row(
            f"{s['batch']}×{s['channels']}×{s['height']}×{s['width']}, k{s['kernel']}",
            f"{row['median_s']['torchvision']:.3f}",
            f"{row['median_s']['grid_sample']:.3f}",
            f"{row['speedup']:.1f}×",
            "yes" if row["speedup"] >= goal else "NO",
            f"{row['numerics']['output']['max_rel']:.1e}",
            f"{worst_grad:.1e}",
            str(sum(v["elements_over_1e-3"] for n, v in row["numerics"].items() if n != "output")),
        )
    console.print(table)

    results = {
        "benchmark": "dcn_speed",
        "device": str(device),
        "repeats": args.repeats,
        "goal_speedup": goal,
        "machine": machine_facts(device),
        "shapes": rows,
    }
    write_json(results, args.json, console)


if __name__ == "__main__":
    main()
