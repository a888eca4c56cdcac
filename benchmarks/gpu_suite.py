"""The GPU minutes, prepared: one command measures every GPU path, each against a reference from the same run.

    python benchmarks/gpu_suite.py --out OUT            # one H100/H200 (benchmarks/README.md: the device call)
    python benchmarks/gpu_suite.py --smoke --out DIR    # every section at toy sizes on the CPU (a test runs it)

It imports only what the GPU machine has (torch, torchvision, lightning, numpy, scikit-image, rich): the
imrestore modules it uses, common.py and the benchmarks it borrows from (dcn_speed, metric_speed) need no dvc,
dvclive, pandera, Great Expectations, ruamel or psutil. Each section is timed by `common.timed` (CUDA
synchronisation around the clock) after a warm-up, as a ratio against a reference measured in this run:

- dcn:        DeformableConv2d fwd+bwd, grid_sample vs torchvision, fp32 and bf16 autocast, at the paper's
              shapes; the fastest backend per dtype is what `FASTEST_BACKEND["cuda"]` should hold.
- train_step: the paper's network (9 blocks), AdamW step in bf16 autocast at crops 128 and 256: crops/s,
              peak memory, the largest batch that fits, eager vs torch.compile vs channels_last, and MFU
              against the bf16 matmul rate measured here (the reference).
- inference:  720p frames/s, bf16 untiled / tiled at batch 1 and 8, against fp32 untiled at batch 1.
- metrics:    imrestore.evaluation.metrics PSNR+SSIM on the device vs skimage on the CPU, and their agreement.
- loader:     the device-resident patch cache's crops/s at 128² and 256², batch 8 to 64, against the step time.
- curve:      150 s (--curve-seconds) of denoise training on SIDD-like pairs synthesised from scikit-image's photos
              (the package's own noise model), test PSNR on held-out crops every 30 s against the input's.

Writes OUT/gpu_suite.json and OUT/gpu_suite.md. benchmarks/README.md has the exact device call.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch

from common import machine_facts, repeat, synchronizer  # puts src/ on sys.path


class Suite:
    """Sizes and the device: `--smoke` shrinks every section so the CPU runs all of it in well under 2 minutes."""

    def __init__(self, smoke: bool, device: torch.device) -> None:
        self.smoke, self.device = smoke, device
        self.cuda = device.type == "cuda"
        self.sync = synchronizer(device)

    def median_s(self, run, repeats: int) -> float:
        """The median seconds of `repeats` calls of `run`, after one warm-up call."""
        return repeat(run, repeats, self.sync, warmup=1).median

    def train_step(self, net, optimizer, degraded: torch.Tensor, clean: torch.Tensor) -> None:
        """One AdamW step on the PSNR loss in bf16 autocast: the step both the timing and the curve take."""
        from imrestore.training import restoration_loss

        optimizer.zero_grad(set_to_none=True)
        with self.autocast("bf16"):
            loss = restoration_loss("psnr", net(degraded), clean)
        loss.backward()
        optimizer.step()

    def autocast(self, dtype: str):
        if dtype == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def peak_memory(self) -> int | None:
        return torch.cuda.max_memory_allocated(self.device) if self.cuda else None

    def reset_memory(self) -> None:
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)


def matmul_rate(suite: Suite) -> dict:
    """The reference for MFU: bf16 matmul FLOP/s of this device, measured now."""
    n = 256 if suite.smoke else 8192
    a = torch.randn(n, n, device=suite.device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=suite.device, dtype=torch.bfloat16)
    seconds = suite.median_s(lambda: a @ b, 3 if suite.smoke else 10)
    return {"n": n, "seconds": seconds, "flops_per_s": 2 * n**3 / seconds}


def section_dcn(suite: Suite) -> dict:
    from dcn_speed import measure

    shapes = [(1, 8, 16, 16, 3), (1, 8, 16, 16, 4)] if suite.smoke else [
        (8, 32, 256, 256, 3), (8, 128, 64, 64, 3), (8, 32, 256, 256, 4)]
    rows, fastest = [], {}
    for dtype in ("fp32", "bf16"):
        wins = {"grid_sample": 0, "torchvision": 0}
        for shape in shapes:
            with suite.autocast(dtype):
                result = measure(shape, suite.device, 2 if suite.smoke else 10)
            rows.append({"dtype": dtype, **result["shape"], "median_s": result["median_s"],
                         "torchvision_over_grid_sample": result["speedup"],
                         "max_rel_output": result["numerics"]["output"]["max_rel"]})
            wins["grid_sample" if result["speedup"] > 1 else "torchvision"] += 1
        fastest[dtype] = max(wins, key=wins.get)
    return {"rows": rows, "fastest_backend": fastest}


def _paper_net(suite: Suite, channels_last: bool):
    from imrestore.models.network import ModelConfig, RestorationNet

    config = ModelConfig(blocks=1, features=8) if suite.smoke else ModelConfig()
    net = RestorationNet(config).to(suite.device)
    return net.to(memory_format=torch.channels_last) if channels_last else net


def _train_step_fn(suite: Suite, net, batch: int, crop: int, channels_last: bool):
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    degraded = torch.rand(batch, 3, crop, crop, device=suite.device)
    clean = torch.rand(batch, 3, crop, crop, device=suite.device)
    if channels_last:
        degraded, clean = (t.contiguous(memory_format=torch.channels_last) for t in (degraded, clean))
    return lambda: suite.train_step(net, optimizer, degraded, clean)


def _step_flops(suite: Suite, batch: int, crop: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    step = _train_step_fn(suite, _paper_net(suite, False), batch, crop, False)
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def _largest_batch(suite: Suite, crop: int, batches: list[int]) -> int:
    """The largest of `batches` whose eager step fits in device memory (every one of them, on the CPU)."""
    fits = batches[0]
    for batch in batches:
        try:
            suite.reset_memory()
            _train_step_fn(suite, _paper_net(suite, False), batch, crop, False)()
            fits = batch
        except torch.OutOfMemoryError:
            break
    suite.reset_memory()
    return fits


def section_train_step(suite: Suite, peak: dict) -> dict:
    crops = [16, 32] if suite.smoke else [128, 256]
    batches = [1, 2] if suite.smoke else [8, 16, 32, 64, 128]
    repeats = 2 if suite.smoke else 10
    rows = []
    for crop in crops:
        largest = _largest_batch(suite, crop, batches)
        for batch in sorted({batches[0], largest}):
            flops = _step_flops(suite, batch, crop)
            # Compiling costs about a minute per shape on a GPU, so only at the full preset's operating point.
            compile_here = crop == crops[-1] and batch == largest
            for variant in ("eager", "channels_last", *(("compiled",) if compile_here else ())):
                suite.reset_memory()
                net = _paper_net(suite, variant == "channels_last")
                started = time.perf_counter()
                if variant == "compiled":
                    net = torch.compile(net)
                step = _train_step_fn(suite, net, batch, crop, variant == "channels_last")
                step()  # compiles, for the compiled variant
                compile_s = time.perf_counter() - started if variant == "compiled" else 0.0
                seconds = suite.median_s(step, repeats)
                rows.append({"crop": crop, "batch": batch, "variant": variant, "step_s": seconds,
                             "crops_per_s": batch / seconds, "flops_per_step": flops,
                             "mfu": flops / seconds / peak["flops_per_s"], "peak_memory_bytes": suite.peak_memory(),
                             "compile_s": compile_s, "largest_batch_that_fits": largest})
    for row in rows:
        eager = next(r for r in rows if (r["crop"], r["batch"], r["variant"]) == (row["crop"], row["batch"], "eager"))
        row["speedup_over_eager"] = eager["step_s"] / row["step_s"]
    return {"rows": rows, "matmul_reference": peak}


def section_inference(suite: Suite) -> dict:
    from imrestore.evaluation.inference import InferenceConfig, restore_images

    height, width = (48, 64) if suite.smoke else (720, 1280)
    net = _paper_net(suite, False).eval()
    configurations = [("fp32", None, 1), ("bf16", None, 1), ("bf16", None, 8), ("bf16", 512, 1), ("bf16", 512, 8)]
    if suite.smoke:
        configurations = [(dtype, 32 if tile else None, min(batch, 2)) for dtype, tile, batch in configurations]
    rows = []
    for dtype, tile, batch in configurations:
        frames = torch.rand(batch, 3, height, width, device=suite.device)
        config = InferenceConfig(tile=tile, overlap=32 if tile and not suite.smoke else (8 if tile else 32),
                                 tile_batch=8, precision=dtype)
        with torch.no_grad():
            seconds = suite.median_s(lambda: restore_images(net, frames, config), 2 if suite.smoke else 5)
        rows.append({"precision": dtype, "tile": tile, "batch": batch, "frames_per_s": batch / seconds})
    reference = rows[0]["frames_per_s"]
    for row in rows:
        row["speedup_over_fp32_untiled"] = row["frames_per_s"] / reference
    return {"height": height, "width": width, "rows": rows}


def section_metrics(suite: Suite) -> dict:
    from metric_speed import skimage_psnr, skimage_ssim

    from imrestore.evaluation.metrics import image_metrics

    count, height, width = (2, 32, 32) if suite.smoke else (8, 720, 1280)
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 256, (count, height, width, 3), dtype=np.uint8)
    preds = np.clip(targets.astype(np.int16) + rng.integers(-12, 13, targets.shape), 0, 255).astype(np.uint8)
    as_tensor = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).contiguous().to(suite.device)  # noqa: E731
    pred_t, target_t = as_tensor(preds), as_tensor(targets)
    ours_s = suite.median_s(lambda: image_metrics(pred_t, target_t), 3)
    reference_s = suite.median_s(lambda: (skimage_psnr(targets, preds), skimage_ssim(targets, preds)), 1)
    ours = image_metrics(pred_t, target_t)
    return {"images": count, "height": height, "width": width, "ours_s": ours_s, "skimage_cpu_s": reference_s,
            "speedup": reference_s / ours_s,
            "max_abs_psnr": float(np.abs(ours["psnr"].cpu().numpy() - skimage_psnr(targets, preds)).max()),
            "max_abs_ssim": float(np.abs(ours["ssim"].cpu().numpy() - skimage_ssim(targets, preds)).max())}


def section_loader(suite: Suite, train_rows: list[dict]) -> dict:
    from imrestore.data.datamodule import DeviceResidentBatches, PlanSampler, Sampling

    patch, count = (64, 16) if suite.smoke else (320, 2048)  # 2048 × 320² × 3 × 2 bytes: 1.3 GB on the device
    rng = np.random.default_rng(0)
    arrays = [torch.from_numpy(rng.integers(0, 256, (count, patch, patch, 3), dtype=np.uint8)).to(suite.device)
              for _ in range(2)]
    rows = []
    for crop in ([16, 32] if suite.smoke else [128, 256]):
        for batch in ([1, 2] if suite.smoke else [8, 16, 32, 64]):
            loader = DeviceResidentBatches(*arrays, Sampling(0, batch, count, patch, crop), PlanSampler(1, None))
            indices = itertools.count()  # a fresh batch plan for every draw

            def draw() -> None:
                loader.batch(0, next(indices))

            seconds = suite.median_s(draw, 5 if suite.smoke else 30)
            step = [r["step_s"] for r in train_rows if r["crop"] == crop and r["batch"] == batch and r["variant"] == "eager"]
            rows.append({"crop": crop, "batch": batch, "crops_per_s": batch / seconds,
                         "share_of_eager_step": seconds / step[0] if step else None})
    return {"rows": rows}


def section_curve(suite: Suite, seconds: float) -> dict:
    from skimage import data as photos

    from imrestore.acquire import degradations as deg
    from imrestore.training import OptimConfig, learning_rate_factor

    seconds_total, every = (3.0, 1.0) if suite.smoke else (seconds, 30.0)
    crop, batch = (32, 2) if suite.smoke else (128, 32)
    rng = np.random.default_rng(0)
    sources = [photos.astronaut(), photos.coffee(), photos.chelsea(), photos.rocket()]
    held_out = photos.immunohistochemistry()  # never trained on

    def pairs(photo: np.ndarray, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        clean, noisy = [], []
        for _ in range(n):
            y, x = rng.integers(0, photo.shape[0] - crop), rng.integers(0, photo.shape[1] - crop)
            gt, degraded = deg.sidd_pair(photo[y:y + crop, x:x + crop], str(rng.choice(deg.CAMERAS)),
                                         int(rng.choice(deg.SIDD_ISOS[2:])), int(rng.choice(deg.ILLUMINANTS_K)),
                                         str(rng.choice(deg.BRIGHTNESS)), rng)
            clean.append(gt)
            noisy.append(degraded)
        to_t = lambda a: torch.from_numpy(np.stack(a)).permute(0, 3, 1, 2).float().div(255).to(suite.device)  # noqa: E731
        return to_t(noisy), to_t(clean)

    pool = [pairs(sources[i % len(sources)], batch) for i in range(4 if suite.smoke else 64)]  # synthesised once
    test_noisy, test_clean = pairs(held_out, 4 if suite.smoke else 32)
    psnr = lambda a, b: float(-10 * torch.log10(((a.clamp(0, 1) - b) ** 2).flatten(1).mean(1)).mean())  # noqa: E731
    net = _paper_net(suite, False)
    optim = OptimConfig(lr=1e-3, warmup_steps=0 if suite.smoke else 100, max_steps=10**6, scheduler="constant")
    optimizer = torch.optim.AdamW(net.parameters(), lr=optim.lr)
    points, step, start, next_point = [], 0, time.perf_counter(), 0.0
    while True:
        elapsed = time.perf_counter() - start
        if elapsed >= next_point:
            net.eval()
            with torch.no_grad(), suite.autocast("bf16"):
                points.append({"seconds": elapsed, "steps": step, "test_psnr": psnr(net(test_noisy).float(), test_clean)})
            net.train()
            next_point += every
            if elapsed >= seconds_total:
                break
        noisy, clean = pool[step % len(pool)]
        for group in optimizer.param_groups:
            group["lr"] = optim.lr * learning_rate_factor(step, optim)
        suite.train_step(net, optimizer, noisy, clean)
        step += 1
    return {"crop": crop, "batch": batch, "input_psnr": psnr(test_noisy, test_clean), "points": points}


def _dcn_lines(dcn: dict) -> list[str]:
    rows = [f"| {r['dtype']} | {r['batch']}×{r['channels']}×{r['height']}×{r['width']}, {r['kernel']} | "
            f"{r['torchvision_over_grid_sample']:.2f} | {r['max_rel_output']:.1e} |" for r in dcn["rows"]]
    return ["## DCN fwd+bwd (torchvision / grid_sample: >1 means grid_sample is faster)", "",
            "| dtype | batch×channels×H×W, k | ratio | max rel. output diff |", "|---|---|---|---|", *rows, "",
            f"FASTEST_BACKEND['cuda'] per dtype: {dcn['fastest_backend']}"]


def _train_step_lines(train: dict) -> list[str]:
    lines = ["## Training step (bf16 autocast)", "",
             "| crop | batch | variant | step s | crops/s | × eager | MFU | peak MiB | compile s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in train["rows"]:
        memory = f"{r['peak_memory_bytes'] / 2**20:.0f}" if r["peak_memory_bytes"] else "—"
        lines.append(f"| {r['crop']} | {r['batch']} | {r['variant']} | {r['step_s']:.4f} | {r['crops_per_s']:.1f} | "
                     f"{r['speedup_over_eager']:.2f} | {r['mfu']:.1%} | {memory} | {r['compile_s']:.0f} |")
    return lines


def _inference_lines(inference: dict) -> list[str]:
    return ["## 720p inference", "", "| precision | tile | batch | frames/s | × fp32 untiled |", "|---|---|---|---|---|",
            *(f"| {r['precision']} | {r['tile'] or 'none'} | {r['batch']} | {r['frames_per_s']:.2f} | "
              f"{r['speedup_over_fp32_untiled']:.2f} |" for r in inference["rows"])]


def _metrics_lines(m: dict) -> list[str]:
    return [f"## Metrics: {m['speedup']:.1f}× skimage on the CPU; max |ΔPSNR| {m['max_abs_psnr']:.1e} dB, "
            f"max |ΔSSIM| {m['max_abs_ssim']:.1e}"]


def _loader_lines(loader: dict) -> list[str]:
    share = lambda value: "—" if value is None else f"{value:.1%}"  # noqa: E731
    return ["## Device-resident loader", "", "| crop | batch | crops/s | share of the eager step |", "|---|---|---|---|",
            *(f"| {r['crop']} | {r['batch']} | {r['crops_per_s']:.0f} | {share(r['share_of_eager_step'])} |"
              for r in loader["rows"])]


def _curve_lines(curve: dict) -> list[str]:
    return [f"## Denoise training curve (input {curve['input_psnr']:.2f} dB on held-out crops)", "",
            "| seconds | steps | test PSNR |", "|---|---|---|",
            *(f"| {p['seconds']:.0f} | {p['steps']} | {p['test_psnr']:.2f} |" for p in curve["points"])]


SECTION_LINES = {"dcn": _dcn_lines, "train_step": _train_step_lines, "inference": _inference_lines,
                 "metrics": _metrics_lines, "loader": _loader_lines, "curve": _curve_lines}


def markdown(results: dict) -> str:
    """The sections that ran, as markdown tables (a `--sections` subset leaves the others out)."""
    lines = [f"# GPU suite: {results['machine'].get('gpu') or 'CPU (smoke)'}"]
    for name, section_lines in SECTION_LINES.items():
        if name in results:
            lines += ["", *section_lines(results[name])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_suite.json and gpu_suite.md")
    parser.add_argument("--smoke", action="store_true", help="toy sizes on the CPU: checks that every section runs")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--sections", default=",".join(SECTION_LINES))
    parser.add_argument("--curve-seconds", type=float, default=150.0, help="training time of the curve section")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    suite = Suite(args.smoke, device)
    started = time.perf_counter()
    wanted = args.sections.split(",")
    results: dict = {"machine": machine_facts(device), "smoke": args.smoke, "seconds": {}}
    peak = matmul_rate(suite)
    runs = {
        "dcn": lambda: section_dcn(suite),
        "train_step": lambda: section_train_step(suite, peak),
        "inference": lambda: section_inference(suite),
        "metrics": lambda: section_metrics(suite),
        "loader": lambda: section_loader(suite, results.get("train_step", {}).get("rows", [])),
        "curve": lambda: section_curve(suite, args.curve_seconds),
    }
    for name, run in runs.items():
        if name not in wanted:
            continue
        section_started = time.perf_counter()
        results[name] = run()
        results["seconds"][name] = time.perf_counter() - section_started
        print(f"{name}: {results['seconds'][name]:.1f} s", flush=True)
    results["seconds"]["total"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_suite.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "gpu_suite.md").write_text(markdown(results))
    print(f"wrote {args.out / 'gpu_suite.json'} and gpu_suite.md in {results['seconds']['total']:.0f} s")


if __name__ == "__main__":
    main()
