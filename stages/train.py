"""train@<task>: train the restoration network on its patch cache (deblur → GoPro, denoise → SIDD).

Reads model.* and train.* from params.yaml and build/patches/<dataset>/; writes models/<task>/ (model.pt, a plain
state dict, and config.json), checkpoints in build/checkpoints/<task>/ (kept between runs: a killed run resumes)
and DVCLive curves in dvclive/<task>/.
"""

import sys
from pathlib import Path

from imrestore.errors import exit_on_error
from imrestore.params import load_params, stage_argument
from imrestore.training import TASKS, TrainConfig, train, with_task_values


@exit_on_error
def main(task: str) -> None:
    params = load_params()
    config = TrainConfig.from_params(params, task)
    for outvoted in with_task_values(params.get("train") or {}, task)[1]:  # e.g. -S train.max_steps=50 over a preset's steps
        print(f"note: {outvoted}", file=sys.stderr)
    train(config, cache_dir=Path("build/patches") / TASKS[task],
          checkpoint_dir=Path("build/checkpoints") / task, model_dir=Path("models") / task,
          live_dir=Path("dvclive") / task)


if __name__ == "__main__":
    main(stage_argument(tuple(TASKS), name="task"))
