"""Full-resolution inference of the paper's network on a 1280×720 frame: tiled against untiled, same run.

The network is `RestorationNet(ModelConfig())` (9 blocks, 32 features, DCN kernel 3; `--blocks`,
`--dcn-kernel`), randomly initialised with seed 0 and real deformations (offset/mask conv randomised as in
dcn_speed.py), or trained weights with `--weights models/deblur`. The frame is a real photograph: skimage's
astronaut and coffee, resized and put side by side into 720×1280 RGB in [0, 1].

Every configuration goes through `imrestore.evaluation.inference.restore_images`, the code `imrestore restore` and the
evaluate stage run. The reference is untiled inference (`tile=None`); it is compared with tiled inference
(`--tiles 256:32,512:32`, tile:overlap, `--tile-batch 1`). For each configuration the table shows:

- seconds per frame: a warm-up, then the median of `--repeats` runs; the configurations alternate, so load
  from other processes on a shared machine falls on all of them alike. Ratio tiled / untiled.
- GFLOP per frame (`torch.utils.flop_counter.FlopCounterMode`, counted on the warm-up run) and GFLOP/s
  achieved, beside the GFLOP/s of a large dense matmul measured in the same run (fp32 2048³ on CPU, bf16
  8192³ on CUDA), the practical peak of the machine. The counter sees convolutions and matrix products
  (2 FLOPs per multiply-add) but not `grid_sample`, the sampling half of the deformable convs, nor
  elementwise ops (LayerNorm, GELU, the LKA gate): the real work is somewhat larger than the count.
- peak memory: each configuration runs once more in a fresh interpreter (this script, `--one CONFIG`),
  which reports its own peak RSS (VmHWM, reset once the model and the frame are built) minus its RSS at
  that point, so each figure is what that configuration adds (`ru_maxrss` would not do: Linux carries it
  over fork and exec, so a child reports at least the parent's RSS); on CUDA also
  `torch.cuda.max_memory_allocated` above what the model and frame hold.
- numerics: the largest |tiled − untiled| and the PSNR between the two outputs (clamped to [0, 1]). They
  are not equal: the channel attention pools over its whole input, i.e. over each tile when tiled.
- the goal from the issue: ≤ 3 s per 720p frame on 2 CPU cores (CPU), ≥ 200 frames/s on an H100 (CUDA).

On CUDA (`--device cuda`) precision "auto" is bf16 autocast, the network is channels-last
(`prepare_network`), and one more configuration restores `--batch 8` frames per forward, untiled: its
frames/s is the number the GPU goal is about.

`--profile` also profiles one untiled forward with `torch.profiler` (self time by op and input shape, top 12)
and times the network's parts with forward hooks (head, down, each body layer summed over blocks, up, tail).

On a machine that other jobs share, compare with `--threads 1`: when another process holds one of two cores,
every OpenMP barrier waits for the preempted thread, and the many small ops of tiled inference suffer most
(benchmarks/README.md has a measured example).

    python benchmarks/inference_speed.py --json build/bench/inference.json
    python benchmarks/inference_speed.py --repeats 1 --profile --json build/bench/inference.json
    python benchmarks/inference_speed.py --threads 1 --json build/bench/inference-1t.json   # shared machine
    python benchmarks/inference_speed.py --device cuda --json build/bench/inference-gpu.json  # GPU machine
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from common import (alternate, argument_parser, machine_facts, new_table, proc_status,  # first: puts src/ on sys.path
                    repeat, synchronizer, timed, wide_console, write_json)

from imrestore.evaluation.inference import (
    InferenceConfig,
    prepare_network,
    resolve_device,
    restore_images,
)
from imrestore.models.network import ModelConfig, RestorationNet

HEIGHT, WIDTH = 720, 1280
GOAL_CPU_SECONDS = 3.0  # per 720p frame, 2 CPU cores
GOAL_GPU_FPS = 200.0  # 720p frames per second, H100
DEFAULT_TILES = "256:32,512:32"


# --------------------------------------------------------------------------------------------- inputs

def frame_720p() -> torch.Tensor:
    """A real photograph as a 3×720×1280 float32 tensor in [0, 1]: astronaut (720×720) beside coffee (720×560)."""
    from skimage import data
    from skimage.transform import resize

    astronaut = resize(data.astronaut(), (HEIGHT, HEIGHT), anti_aliasing=True)
    coffee = resize(data.coffee(), (HEIGHT, HEIGHT * 600 // 400), anti_aliasing=True)  # 720×1080
    side = WIDTH - HEIGHT
    start = (coffee.shape[1] - side) // 2
    frame = np.concatenate([astronaut, coffee[:, start:start + side]], axis=1)
    return torch.from_numpy(frame.astype(np.float32)).permute(2, 0, 1).contiguous().clamp_(0, 1)


def build_network(spec: dict, device: torch.device) -> torch.nn.Module:
    if spec["weights"]:
        from imrestore.app.restore import load_weights

        net = load_weights(Path(spec["weights"]))
    else:
        torch.manual_seed(0)
        net = RestorationNet(ModelConfig(blocks=spec["blocks"], dcn_kernel=spec["dcn_kernel"]))
        with torch.no_grad():  # real deformations: offsets of a few pixels, masks spread over (0, 2)
            for dcn in (net.head, net.tail):
                dcn.offset_mask.weight.normal_(std=0.05)
                dcn.offset_mask.bias.normal_(std=1.0)
    return prepare_network(net, device)


def inference_config(config: dict, precision: str) -> InferenceConfig:
    return InferenceConfig(tile=config["tile"], overlap=config["overlap"], tile_batch=config["tile_batch"],
                           precision=precision)


def configurations(tiles: str, tile_batch: int, batch: int) -> list[dict]:
    rows = [{"name": "untiled", "tile": None, "overlap": 0, "tile_batch": 1, "frames": 1}]
    for text in filter(None, tiles.split(",")):
        tile, overlap = (int(v) for v in text.split(":"))
        rows.append({"name": f"tile {tile}/{overlap}", "tile": tile, "overlap": overlap,
                     "tile_batch": tile_batch, "frames": 1})
    if batch > 0:
        rows.append({"name": f"untiled ×{batch}", "tile": None, "overlap": 0, "tile_batch": batch, "frames": batch})
    return rows


def frames_for(frame: torch.Tensor, config: dict, device: torch.device) -> torch.Tensor:
    return frame.to(device)[None].expand(config["frames"], -1, -1, -1).contiguous()


# --------------------------------------------------------------------------------------------- measuring

def matmul_peak(device: torch.device, repeats: int = 5) -> dict:
    """GFLOP/s of one large dense matmul: what this machine's BLAS reaches, the ceiling for the network."""
    size, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (2048, torch.float32)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    seconds = repeat(lambda: a @ b, repeats, synchronizer(device), warmup=1).median
    return {"what": f"{dtype} matmul {size}³", "seconds": seconds, "gflops": 2 * size**3 / seconds / 1e9}


def counted_run(net, images, config: InferenceConfig) -> tuple[torch.Tensor, int, dict[str, int]]:
    """One restore under FlopCounterMode (it doubles as the warm-up): output, FLOPs, FLOPs by top-level stage."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, depth=2)
    with counter:
        output = restore_images(net, images, config)
    by_stage = {}
    for module, ops in counter.get_flop_counts().items():
        if module.count(".") == 1:  # "RestorationNet.head", "RestorationNet.body", ...
            by_stage[module.split(".", 1)[1]] = int(sum(ops.values()))
    return output, int(counter.get_total_flops()), by_stage


def reset_peak_rss() -> None:
    """Set VmHWM back to the current RSS (Linux ≥ 4.0), so the next peak is this configuration's own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def run_one(spec: dict) -> dict:
    """The `--one` child: build, note memory, restore once, report the peaks (JSON on the last stdout line)."""
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    if spec["cudnn_benchmark"]:
        torch.backends.cudnn.benchmark = True
    config = spec["config"]
    net = build_network(spec, device)
    images = frames_for(frame_720p(), config, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        cuda_baseline = torch.cuda.memory_allocated(device)
    reset_peak_rss()
    baseline = proc_status().get("VmRSS", 0)
    restore_images(net, images, inference_config(config, spec["precision"]))
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child of this (large) benchmark
    # would report the parent's RSS. VmHWM belongs to the new address space exec made; ru_maxrss stands in
    # where there is no /proc.
    peak = proc_status().get("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result = {"rss_after_model_bytes": baseline, "peak_rss_bytes": peak, "peak_rss_delta_bytes": peak - baseline}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak_cuda = torch.cuda.max_memory_allocated(device)
        result |= {"cuda_baseline_bytes": cuda_baseline, "cuda_peak_bytes": peak_cuda,
                   "cuda_peak_delta_bytes": peak_cuda - cuda_baseline}
    return result


def memory_in_child(spec: dict, config: dict, console: Console) -> dict | None:
    command = [sys.executable, str(Path(__file__).resolve()), "--one", json.dumps(spec | {"config": config})]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        console.print(f"[red]memory run of {config['name']} failed (exit {done.returncode}):[/red]")
        console.print(done.stderr[-2000:], markup=False)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    mse = torch.mean((x.clamp(0, 1).double() - y.clamp(0, 1).double()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


# --------------------------------------------------------------------------------------------- profiling

def profile_forward(net, frame: torch.Tensor, precision: str, device: torch.device, console: Console) -> dict:
    """Where one untiled forward spends its time: torch.profiler by op and shape, then by network part."""
    from torch.profiler import ProfilerActivity, profile

    config = InferenceConfig(tile=None, tile_batch=1, precision=precision)
    images = frame.to(device)[None]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort_by = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    with profile(activities=activities, record_shapes=True) as prof:
        restore_images(net, images, config)
        synchronizer(device)()
    averages = prof.key_averages(group_by_input_shape=True)
    # print(), not rich: the table is preformatted, and its "[[1, 32, 720, 1280], ...]" would read as markup.
    print(averages.table(sort_by=sort_by, row_limit=12, max_name_column_width=32, max_shapes_column_width=70),
          flush=True)
    total_self = sum(event.self_cpu_time_total for event in averages)
    ops = sorted(averages, key=lambda event: getattr(event, sort_by), reverse=True)[:12]
    top = [{"op": e.key, "input_shapes": str(e.input_shapes), "calls": e.count,
            "self_cpu_ms": e.self_cpu_time_total / 1e3,
            "self_cpu_share": e.self_cpu_time_total / total_self if total_self else None}
           | ({"self_device_ms": e.self_device_time_total / 1e3} if device.type == "cuda" else {})
           for e in ops]
    return {"top_ops": top, "self_cpu_total_ms": total_self / 1e3, "parts": time_parts(net, images, config, device,
                                                                                        console)}


def part_name(name: str) -> str | None:
    """The group a module's time is booked under, or None for modules not timed on their own."""
    if name in ("head", "down1", "down2", "up1", "up2", "tail"):
        return name
    match = re.fullmatch(r"body\.\d+\.(conv1|conv2|norm1|norm2|lka\.depthwise|lka\.depthwise_dilated|lka\.pointwise|"
                         r"channel_attention|mlp)", name)
    return f"body.*.{match.group(1)}" if match else None


def time_parts(net, images, config: InferenceConfig, device: torch.device, console: Console) -> dict:
    """Inclusive wall time per network part (forward hooks, synchronised on CUDA), one untiled forward."""
    sync = synchronizer(device)
    seconds: dict[str, float] = defaultdict(float)
    starts: dict[str, float] = {}
    handles = []
    for name, module in net.named_modules():
        group = part_name(name)
        if group is None:
            continue

        def before(module, args, name=name):
            sync()
            starts[name] = time.perf_counter()

        def after(module, args, output, name=name, group=group):
            sync()
            seconds[group] += time.perf_counter() - starts.pop(name)

        handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        total = timed(lambda: restore_images(net, images, config), sync).wall
    finally:
        for handle in handles:
            handle.remove()
    table = new_table(f"one untiled 720p forward by part: {total:.2f} s (forward hooks, inclusive times)",
                      ("part", "seconds", "share"))
    for group, s in sorted(seconds.items(), key=lambda item: -item[1]):
        table.add_row(group, f"{s:.3f}", f"{s / total:.0%}")
    rest = total - sum(seconds.values())
    table.add_row("rest (body ReLU/adds/layer scale, LKA gate, pad, copies)", f"{rest:.3f}", f"{rest / total:.0%}")
    console.print(table)
    return {"total_s": total, "seconds": dict(seconds), "rest_s": rest}


# --------------------------------------------------------------------------------------------- main

def measure(args, console: Console) -> dict:
    device = resolve_device(args.device)
    spec = {"device": str(device), "threads": torch.get_num_threads(), "precision": args.precision,
            "cudnn_benchmark": device.type == "cuda" and args.cudnn_benchmark,
            "blocks": args.blocks, "dcn_kernel": args.dcn_kernel,
            "weights": str(args.weights) if args.weights else None}
    batch = args.batch if args.batch is not None else (8 if device.type == "cuda" else 0)
    configs = configurations(args.tiles, args.tile_batch, batch)
    sync = synchronizer(device)
    if device.type == "cuda" and args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True

    frame = frame_720p()
    net = build_network(spec, device)
    inputs = {c["name"]: frames_for(frame, c, device) for c in configs}
    settings = {c["name"]: inference_config(c, args.precision) for c in configs}

    console.print(f"dense matmul on {device} (the practical peak) ...")
    peak = matmul_peak(device)
    outputs, flops, flops_by_stage = {}, {}, {}
    for c in configs:  # the warm-up, counted
        console.print(f"warm-up + FLOP count: {c['name']} ...")
        outputs[c["name"]], flops[c["name"]], flops_by_stage[c["name"]] = counted_run(
            net, inputs[c["name"]], settings[c["name"]])
        sync()
    samples = alternate({c["name"]: lambda c=c: restore_images(net, inputs[c["name"]], settings[c["name"]])
                         for c in configs}, args.repeats, sync, console=console)
    seconds = {name: s.wall for name, s in samples.items()}

    memory = {}
    if not args.no_memory:
        for c in configs:
            console.print(f"peak memory in a fresh interpreter: {c['name']} ...")
            memory[c["name"]] = memory_in_child(spec, c, console)

    reference = outputs["untiled"][0]
    untiled_s = samples["untiled"].median
    rows = []
    for c in configs:
        median = samples[c["name"]].median
        first = outputs[c["name"]][0]
        rows.append(c | {
            "seconds": seconds[c["name"]],
            "median_s": median,
            "seconds_per_frame": median / c["frames"],
            "frames_per_s": c["frames"] / median,
            "ratio_to_untiled": (median / c["frames"]) / untiled_s,
            "gflop_per_frame": flops[c["name"]] / c["frames"] / 1e9,
            "gflops_achieved": flops[c["name"]] / median / 1e9,
            "gflop_by_stage": {k: v / c["frames"] / 1e9 for k, v in flops_by_stage[c["name"]].items()},
            "max_abs_diff_vs_untiled": (first - reference).abs().max().item(),
            "psnr_vs_untiled_db": psnr(first, reference),
            "memory": memory.get(c["name"]),
        })

    profile = profile_forward(net, frame, args.precision, device, console) if args.profile else None
    return {"device": device, "spec": spec, "peak": peak, "rows": rows, "profile": profile,
            "params": sum(p.numel() for p in net.parameters())}


def report(args, measured: dict, console: Console) -> None:
    device, rows, peak = measured["device"], measured["rows"], measured["peak"]
    cuda = device.type == "cuda"
    spec = measured["spec"]
    model = ("weights " + spec["weights"]) if spec["weights"] else f"{spec['blocks']} blocks, DCN k{spec['dcn_kernel']}"
    goal = f"≥ {GOAL_GPU_FPS:g} frames/s (H100)" if cuda else f"≤ {GOAL_CPU_SECONDS:g} s/frame (2 cores)"
    table = new_table(f"720p inference on {device}, {torch.get_num_threads()} threads, {model} "
                      f"({measured['params']:,} params), median of {args.repeats}; dense-matmul peak "
                      f"{peak['gflops']:.0f} GFLOP/s",
                      ("configuration", "s/frame", "frames/s", "× untiled", f"goal {goal}", "GFLOP/frame*",
                       "GFLOP/s (% of peak)", "peak RSS Δ", *(("peak CUDA Δ",) if cuda else ()),
                       "max |Δ| vs untiled", "PSNR vs untiled"))
    for row in rows:
        met = row["frames_per_s"] >= GOAL_GPU_FPS if cuda else row["seconds_per_frame"] <= GOAL_CPU_SECONDS
        memory = row["memory"] or {}
        cells = [
            row["name"],
            f"{row['seconds_per_frame']:.3f}" if cuda else f"{row['seconds_per_frame']:.2f}",
            f"{row['frames_per_s']:.1f}" if cuda else f"{row['frames_per_s']:.3f}",
            f"{row['ratio_to_untiled']:.2f}",
            "yes" if met else "NO",
            f"{row['gflop_per_frame']:.1f}",
            f"{row['gflops_achieved']:.1f} ({row['gflops_achieved'] / peak['gflops']:.0%})",
            f"{memory['peak_rss_delta_bytes'] / 2**20:,.0f} MiB" if "peak_rss_delta_bytes" in memory else "—",
        ]
        if cuda:
            cells.append(f"{memory['cuda_peak_delta_bytes'] / 2**20:,.0f} MiB" if "cuda_peak_delta_bytes" in memory
                         else "—")
        cells += [f"{row['max_abs_diff_vs_untiled']:.2e}", f"{row['psnr_vs_untiled_db']:.1f} dB"]
        table.add_row(*cells)
    console.print(table)
    stages = rows[0]["gflop_by_stage"]
    console.print("* FLOPs counted by FlopCounterMode (convs and matmuls, 2 per multiply-add); grid_sample (the "
                  "sampling half of the DCN head and tail) and elementwise ops are not counted. Untiled GFLOP by "
                  "stage: " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
    if device.type == "cpu" and torch.get_num_threads() != 2:
        console.print(f"note: the CPU goal is for 2 cores; this run used {torch.get_num_threads()} threads.")


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--blocks", type=int, default=ModelConfig.blocks, help="residual blocks (default 9)")
    parser.add_argument("--dcn-kernel", type=int, default=ModelConfig.dcn_kernel, help="3 or 4 (default 3)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="trained weights (models/<task> or a .ckpt) instead of a random network")
    parser.add_argument("--tiles", default=DEFAULT_TILES,
                        help=f"tile:overlap, comma-separated (default {DEFAULT_TILES})")
    parser.add_argument("--tile-batch", type=int, default=1, help="tiles per forward (default 1)")
    parser.add_argument("--batch", type=int, default=None,
                        help="frames per forward in an extra untiled configuration (default 8 on CUDA, none on CPU)")
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                        help="auto: bf16 autocast on CUDA, fp32 on CPU (default auto)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration, alternating (default 3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: all cores available to this process)")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs in fresh interpreters")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one untiled forward (torch.profiler top 12, time by network part)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child mode: one configuration's memory
    args = parser.parse_args()

    if args.one is not None:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    threads = args.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    torch.set_num_threads(threads)

    console = wide_console(180)
    measured = measure(args, console)
    report(args, measured, console)
    device = measured["device"]
    results = {
        "benchmark": "inference_speed",
        "device": str(device),
        "frame": [3, HEIGHT, WIDTH],
        "model": measured["spec"] | {"parameters": measured["params"]},
        "repeats": args.repeats,
        "goal": {"cpu_seconds_per_frame": GOAL_CPU_SECONDS, "gpu_frames_per_s": GOAL_GPU_FPS},
        "matmul_peak": measured["peak"],
        "machine": machine_facts(device),
        "configurations": measured["rows"],
        "profile": measured["profile"],
    }
    write_json(results, args.json, console)


if __name__ == "__main__":
    main()
