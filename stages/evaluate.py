"""evaluate@<task>: the trained network on the full-resolution test split, with baselines, into metrics JSON.

Reads evaluate.* from params.yaml, models/<task>/ and the dataset's test split (build/splits/<dataset>.csv and
the images in build/raw/<dataset>/), plus the SIDD validation benchmark when its .mat files are under
evaluate.benchmarks; writes metrics/<task>.json, metrics/<task>/per_image.csv and metrics/<task>/comparisons/.
"""

from pathlib import Path

from imrestore.data.layouts import TASKS
from imrestore.errors import exit_on_error
from imrestore.evaluation.evaluate import EvaluateSettings, evaluate
from imrestore.params import load_params, stage_argument


@exit_on_error
def main(task: str) -> None:
    metrics = evaluate(EvaluateSettings.for_task(load_params(), task), weights_dir=Path("models") / task,
                       split_csv=Path("build/splits") / f"{TASKS[task]}.csv",
                       metrics_json=Path("metrics") / f"{task}.json", report_dir=Path("metrics") / task)
    print(f"{task}: PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f} on {metrics['n_images']} test images "
          f"(input {metrics['input']['psnr']:.2f} dB / {metrics['input']['ssim']:.4f})")


if __name__ == "__main__":
    main(stage_argument(tuple(TASKS), name="task"))
