"""Training steps per second of the paper's network against a NAFNet-style reference, measured in the same run.

One step is what `train` pays per batch apart from data loading: zero the gradients, forward, L1 loss, backward,
AdamW step (the project's lr, weight decay and betas), on a random batch of `--batch` crops of `--crop`² in
[0, 1], both networks in training mode, float32. The paper's network is
`imrestore.models.network.RestorationNet(ModelConfig())` (9 blocks, 32 features, DCN kernel 3, LKA and channel
attention). The reference is NAFNet (Chen et al., "Simple Baselines for Image Restoration", ECCV 2022) at the
size the pipeline trains with `model.arch: nafnet`: `imrestore.models.nafnet.NAFNet(NAFNetConfig())`, width 16,
blocks [1, 1, 1, 1] / 1 / [1, 1, 1, 1], 1.1M parameters. Both use imrestore's LayerNorm2d (the same per-pixel
normalisation), so they differ in architecture, not in that kernel.

After 2 warm-up steps each, the two networks' timed steps alternate (which goes first alternates too), so a
shared machine's load falls on both alike. The table shows the median step time, steps/s, parameters, and the
ratio paper / reference of the step time (> 1: the paper's network is slower per step).

    python benchmarks/train_step_speed.py                       # batch 4, crop 64, 20 steps
    python benchmarks/train_step_speed.py --batch 8 --crop 128 --device cuda   # GPU machine
    python benchmarks/train_step_speed.py --smoke               # batch 1, crop 32, 2 steps

Writes <out>/train_step_speed.json (its fields: benchmarks/README.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from common import (add_run_arguments, alternate, argument_parser, machine_facts,  # first: puts src/ on sys.path
                    new_table, output_dir, synchronizer, write_json)

from imrestore.models.nafnet import NAFNet, NAFNetConfig
from imrestore.models.network import ModelConfig, RestorationNet, count_parameters

WARMUP = 2
SMOKE = {"batch": 1, "crop": 32, "steps": 2}


# ---------------------------------------------------------------------------------------------- measurement

def training_step(net: nn.Module, optimizer: torch.optim.Optimizer, degraded: torch.Tensor, clean: torch.Tensor):
    optimizer.zero_grad(set_to_none=True)
    loss = F.l1_loss(net(degraded), clean)
    loss.backward()
    optimizer.step()


def measure(batch: int, crop: int, steps: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    nets = {"paper": ("RestorationNet(ModelConfig())", RestorationNet(ModelConfig())),
            "reference": (f"NAFNet ({NAFNetConfig().describe()})", NAFNet(NAFNetConfig()))}
    degraded, clean = torch.rand(2, batch, 3, crop, crop).to(device)
    runs = {}
    for key, (_, net) in nets.items():
        net = net.to(device).train()
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4, betas=(0.9, 0.99))
        runs[key] = lambda net=net, optimizer=optimizer: training_step(net, optimizer, degraded, clean)
    samples = alternate(runs, steps, synchronizer(device), warmup=WARMUP)
    networks = {}
    for key, (name, net) in nets.items():
        median = samples[key].median
        networks[key] = {"name": name, "parameters": count_parameters(net), "step_seconds": samples[key].wall,
                         "median_step_s": median, "steps_per_s": 1 / median}
    ratio = networks["paper"]["median_step_s"] / networks["reference"]["median_step_s"]
    return {"networks": networks, "ratio_paper_over_reference": {"step_time": ratio, "steps_per_s": 1 / ratio}}


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser(__doc__, json_results=False)
    parser.add_argument("--batch", type=int, default=4, help="crops per step (default 4, train.batch_size)")
    parser.add_argument("--crop", type=int, default=64, help="crop side (default 64, train.crop)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each network, alternating (default 20)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    add_run_arguments(parser, "batch 1, crop 32, 2 steps: checks the script runs", params=False, build=False)
    args = parser.parse_args(argv)
    settings = SMOKE if args.smoke else {"batch": args.batch, "crop": args.crop, "steps": args.steps}
    device = torch.device(args.device)

    console = Console()
    console.print(f"measuring {settings['steps']} training steps of each network on {device} ...")
    measured = measure(**settings, device=device)
    results = {"benchmark": "train_step_speed", "device": str(device), **settings, "warmup": WARMUP, **measured,
               "machine": machine_facts(device)}

    table = new_table(f"training step (fwd + L1 + bwd + AdamW) on {device}, batch {settings['batch']}×"
                      f"{settings['crop']}², median of {settings['steps']}",
                      ("network", "parameters", "median step s", "steps/s"))
    for key, row in measured["networks"].items():
        table.add_row(f"{key}: {row['name']}", f"{row['parameters']:,}", f"{row['median_step_s']:.4f}",
                      f"{row['steps_per_s']:.2f}")
    console.print(table)
    ratio = measured["ratio_paper_over_reference"]
    console.print(f"paper / reference: {ratio['step_time']:.2f}× the step time "
                  f"({ratio['steps_per_s']:.2f}× the steps/s)")
    write_json(results, output_dir(args.out, args.smoke) / "train_step_speed.json", console)


if __name__ == "__main__":
    main()
