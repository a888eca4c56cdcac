"""Why a kernel-4 network starts slowly, and what `train.optim.offset_lr_scale` does about it.

The deformable convolutions' offset/mask predictors are zero-initialised: a fresh layer samples the regular
grid. Adam's early steps are about lr in size whatever the gradient's magnitude, so at the network's lr the
predictors scatter the sampling points within tens of steps, before the features exist that offsets could
align; the network then learns little until it has undone that. This benchmark trains the same network with
the offset predictors at several fractions of the lr and records, at every validation:

- the validation PSNR (the val split only: this benchmark chooses a default, so it never reads the test split);
- the RMS sampling offset, in pixels, the DCN layers predict for a validation batch (0 = the regular grid);
- the gradient norm of the network's other parameters in the step before, relative to the kernel-3
  reference's at the same step: how much learning signal gets past scattered sampling points.

Each variant runs the pipeline's own `imrestore.training.train` on the pipeline's patch cache with params.yaml
as it is, except the values named: `model.dcn_kernel`, `model.blocks`, `train.max_steps`,
`train.optim.offset_lr_scale`. The reference is kernel 3 at scale 1 in the same run (the network before this
lever existed at the paper's other kernel size).

    python benchmarks/dcn_offset_lr.py                      # denoise, 12 blocks, 400 steps, scales 1 0.1 0
    python benchmarks/dcn_offset_lr.py --blocks 9 --scales 1 0.1
    python benchmarks/dcn_offset_lr.py --smoke              # 2 steps per variant: checks it runs

Writes <out>/dcn_offset_lr.json (its fields: benchmarks/README.md).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from rich.console import Console

from common import (add_run_arguments, argument_parser, machine_facts,  # first: puts src/ on sys.path
                    new_table, output_dir, pipeline_inputs, with_overrides, write_json)

import imrestore.training as training
from imrestore.models.dcn import DeformableConv2d
from imrestore.params import load_params

NOTE = "Validation split only: this benchmark chooses train.optim.offset_lr_scale, so it never reads the test split."
SMOKE = {"train.max_steps": 2, "train.steps_per_epoch": 1}
REFERENCE = {"dcn_kernel": 3, "offset_lr_scale": 1.0}


class OffsetProbe(Callback):
    """At every validation: the val PSNR, the RMS offset the DCN layers predict on the first val batch, and the
    gradient norm that reached the optimiser's `network` group (everything but the offset predictors:
    `RestorationModule.parameter_groups`) in the last training step."""

    def __init__(self) -> None:
        self.points: list[dict] = []
        self.grad_norm: float | None = None
        self.offsets: list[torch.Tensor] = []
        self.hooks: list = []
        self.started = time.perf_counter()

    def on_after_backward(self, trainer, module) -> None:
        network = next(g for g in trainer.optimizers[0].param_groups if g["name"] == "network")
        grads = [p.grad for p in network["params"] if p.grad is not None]
        self.grad_norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))

    def on_validation_batch_start(self, trainer, module, batch, batch_index, dataloader_idx=0) -> None:
        if batch_index:
            return
        self.offsets = []
        self.hooks = [layer.register_forward_hook(self._record_offsets)
                      for layer in module.net.modules() if isinstance(layer, DeformableConv2d)]

    def _record_offsets(self, layer, inputs, output) -> None:
        offset, _ = layer.offset_and_mask(inputs[0])
        self.offsets.append(offset.detach().float())

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_index, dataloader_idx=0) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks = []

    def on_validation_end(self, trainer, module) -> None:
        psnr = trainer.callback_metrics.get("val/psnr")
        rms = (float(torch.sqrt(torch.mean(torch.cat([o.flatten() for o in self.offsets]) ** 2)))
               if self.offsets else None)
        self.points.append({"step": trainer.global_step, "seconds": time.perf_counter() - self.started,
                            "val_psnr": None if psnr is None else float(psnr), "rms_offset_px": rms,
                            "grad_norm": self.grad_norm})


def run_variant(params: dict, task: str, cache: Path) -> list[dict]:
    probe = OffsetProbe()
    with tempfile.TemporaryDirectory(prefix=f"dcn-offset-lr-{task}-") as tmp:
        training.train(training.TrainConfig.from_params(params, task), cache_dir=cache,
                       checkpoint_dir=Path(tmp) / "checkpoints", model_dir=Path(tmp) / "model", live_dir=None,
                       callbacks=[probe])
    return probe.points


def variant_name(dcn_kernel: int, offset_lr_scale: float) -> str:
    return f"k{dcn_kernel} scale {offset_lr_scale:g}"


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser(__doc__, json_results=False)
    parser.add_argument("--task", choices=list(training.TASKS), default="denoise", help="default denoise")
    parser.add_argument("--blocks", type=int, default=12, help="model.blocks (default 12)")
    parser.add_argument("--kernel", type=int, default=4, help="model.dcn_kernel of the variants (default 4)")
    parser.add_argument("--steps", type=int, default=400, help="train.max_steps of each variant (default 400)")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.1, 0.0],
                        help="train.optim.offset_lr_scale values (default 1 0.1 0)")
    add_run_arguments(parser, "2 steps per variant, validating every step: checks the script runs")
    args = parser.parse_args(argv)
    cache, _ = pipeline_inputs(args.build, training.TASKS[args.task])
    out = output_dir(args.out, args.smoke)
    base = with_overrides(load_params(args.params), {"model.blocks": args.blocks, "train.max_steps": args.steps,
                                                     **(SMOKE if args.smoke else {})})

    console = Console()
    console.print(NOTE)
    variants = [{"dcn_kernel": args.kernel, "offset_lr_scale": scale} for scale in args.scales] + [REFERENCE]
    results = {"benchmark": "dcn_offset_lr", "task": args.task, "note": NOTE, "blocks": args.blocks,
               "max_steps": base["train"]["max_steps"], "reference": variant_name(**REFERENCE), "variants": {}}
    for variant in variants:
        name = variant_name(**variant)
        console.rule(name)
        params = with_overrides(base, {"model.dcn_kernel": variant["dcn_kernel"],
                                       "train.optim.offset_lr_scale": variant["offset_lr_scale"]})
        results["variants"][name] = {**variant, "points": run_variant(params, args.task, cache)}
    reference = results["variants"][results["reference"]]["points"]
    for row in results["variants"].values():  # learning signal past the DCN layers, against kernel 3's
        for point, ref in zip(row["points"], reference):
            point["grad_norm_vs_reference"] = (point["grad_norm"] / ref["grad_norm"]
                                               if point["grad_norm"] and ref["grad_norm"] else None)
    results["machine"] = machine_facts()

    steps = [point["step"] for point in reference]
    table = new_table(f"{args.task}, {args.blocks} blocks: val PSNR (dB) / RMS offset (px) at each validation",
                      ("variant", *(f"step {s}" for s in steps)))
    for name, row in results["variants"].items():
        table.add_row(name, *(f"{p['val_psnr']:.2f} / {p['rms_offset_px']:.2f}"
                              if p["val_psnr"] is not None and p["rms_offset_px"] is not None else "n/a"
                              for p in row["points"]))
    console.print(table)
    write_json(results, out / "dcn_offset_lr.json", console)


if __name__ == "__main__":
    main()
