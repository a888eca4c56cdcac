"""`imrestore restore`: a trained network on the user's own images, a file or a folder in, PNGs out.

    imrestore restore photos/ --task denoise --out restored/
    imrestore restore blurry.jpg --weights build/checkpoints/deblur/last.ckpt --tile 512 --device cuda

Weights are an exported model folder (models/<task>/: model.pt + config.json, what `dvc pull` fetches) or a
Lightning checkpoint of a training run; both load with `weights_only=True`, so a weights file can hold
tensors and plain values only, never code. A folder is walked recursively and its layout is mirrored under
the output folder. Before anything is loaded, the outputs are checked: a PNG that would replace an input, two
inputs that would share one PNG (rgb.jpg and rgb.png), or an --out that cannot be written are refused by
name. The task the weights were trained for is read from config.json beside model.pt, or from the run.json
training writes beside its checkpoints. An unreadable image is reported and skipped; the command then exits
non-zero. Grey, 16-bit, alpha, palette, CMYK and EXIF-rotated images are handled as `user_images` describes,
and whatever is converted or reduced is reported beside the image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from imrestore.app.outputs import check_file, check_folder, writing
from imrestore.app.user_images import read_user_image, write_user_image
from imrestore.data.layouts import TASKS
from imrestore.errors import ImrestoreError
from imrestore.evaluation.inference import InferenceConfig, prepare_network, resolve_device, restore_images
from imrestore.models.weights import load_network, load_tensors, network_from
from imrestore.progress import progress_bar

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
CHECKPOINT_PREFIX = "net."  # RestorationModule keeps the network as `self.net`
RUN_FILE = "run.json"  # imrestore.training.RUN_FILE, named here so restore starts without Lightning


@dataclass
class RestoreReport:
    written: list[Path] = field(default_factory=list)
    failed: dict[Path, str] = field(default_factory=dict)
    notes: dict[Path, list[str]] = field(default_factory=dict)  # what was converted or reduced, per input


def load_weights(weights: Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """An exported model folder (or its model.pt) or a Lightning checkpoint (.ckpt), as a network."""
    weights = Path(weights)
    if not weights.exists():
        raise ImrestoreError(f"--weights {weights} does not exist; expected a model folder (model.pt + "
                             "config.json) or a Lightning checkpoint (.ckpt)")
    if weights.is_dir() or weights.name == "model.pt":
        return load_network(weights if weights.is_dir() else weights.parent, map_location)
    if weights.suffix != ".ckpt":
        raise ImrestoreError(f"--weights {weights}: expected a model folder (model.pt + config.json) or a "
                             f"Lightning checkpoint (.ckpt)")
    checkpoint = load_tensors(weights, map_location)
    try:
        model = checkpoint["hyper_parameters"]["model"]
        state = {key.removeprefix(CHECKPOINT_PREFIX): value for key, value in checkpoint["state_dict"].items()
                 if key.startswith(CHECKPOINT_PREFIX)}
    except (KeyError, TypeError, AttributeError):
        raise ImrestoreError(f"{weights} is not a checkpoint of an imrestore training run "
                             f"(expected hyper_parameters.model and a state_dict of net.* tensors)") from None
    return network_from(model, state, source=weights, described_by="its hyper_parameters",
                        origin=str(weights), where="hyper_parameters.model")


def task_record(weights: Path) -> Path:
    """The file that says which task `weights` were trained for: config.json beside model.pt, or the run's
    run.json beside a Lightning checkpoint (the checkpoint itself keeps only the model and optimiser)."""
    if weights.suffix == ".ckpt":
        return weights.parent / RUN_FILE
    return (weights if weights.is_dir() else weights.parent) / "config.json"


def load_task_weights(task: str, weights: Path | None = None) -> tuple[Path, nn.Module]:
    """(where the weights are, the network) for `task`: `weights`, or models/<task> when it is None. Weights
    their config.json or run.json says were trained for the other task are refused."""
    if task not in TASKS:
        raise ImrestoreError(f"--task must be one of {', '.join(TASKS)}, found {task!r}")
    if weights is None:
        weights = Path("models") / task
        if not (weights / "model.pt").is_file():
            raise ImrestoreError(
                f"no trained {task} model in {weights}/ (where it is looked for without --weights): run "
                f"`dvc repro train@{task}` or `dvc pull` in the repository, or pass --weights")
    weights = Path(weights)
    net = load_weights(weights)
    record = task_record(weights)
    try:  # weights copied without their record are taken as they are: nothing says what they were for
        trained_for = json.loads(record.read_text()).get("task") if record.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise ImrestoreError(f"{record}, beside {weights}, is not the JSON object training writes (with its "
                             "\"task\"); restore it, or remove it to use the weights without the task check") from None
    if trained_for not in (None, task):
        raise ImrestoreError(f"{weights} was trained for {trained_for}, not {task} ({record} says so)")
    return weights, net


def find_images(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    if source.is_dir():  # is_file: a folder named like an image (trip.jpg/) is walked, not read
        images = sorted(path for path in source.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES
                        and path.is_file())
        if not images:
            raise ImrestoreError(f"{source} holds no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
        return images
    raise ImrestoreError(f"{source}: no such file or folder")


def output_path(image: Path, source: Path, out_dir: Path) -> Path:
    relative = image.relative_to(source) if source.is_dir() else Path(image.name)
    return out_dir / relative.with_suffix(".png")


def output_targets(images: list[Path], source: Path, out_dir: Path) -> dict[Path, Path]:
    """{image: the PNG it is restored to}, refused before any work when a PNG would replace an input or
    another image's PNG, or cannot be written where it goes."""
    check_folder(out_dir, "--out, the folder for the restored PNGs")
    targets = {image: output_path(image, source, out_dir) for image in images}
    by_target: dict[Path, list[Path]] = {}
    for image, target in targets.items():
        by_target.setdefault(target, []).append(image)
    clashes = [f"{' and '.join(map(str, sharing))} would {'both' if len(sharing) == 2 else 'all'} be written to "
               f"{target}" for target, sharing in by_target.items() if len(sharing) > 1]
    if clashes:  # e.g. rgb.jpg and rgb.png: one PNG would silently replace the other
        raise ImrestoreError("inputs that would be restored to the same PNG (rename one, or restore them into "
                             "separate folders):\n" + "\n".join(clashes))
    # An input is recognised by its file, not its spelling: a symlinked folder, a case-insensitive file system
    # or an --out inside the source can all lead a target onto an input under another name.
    inputs = {file_id: image for image in images if (file_id := _file_id(image)) is not None}
    for image, target in targets.items():
        clobbered = inputs.get(_file_id(target))  # None (no such file) is no input's id
        if clobbered is not None:
            whose = "its own restoration" if clobbered == image else f"the restoration of {image}"
            raise ImrestoreError(f"--out {out_dir} would overwrite the input {clobbered} with {whose} "
                                 f"({target}); choose another folder")
    for image, target in targets.items():
        check_file(target, f"the restored PNG of {image}")
    return targets


def _file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the directory entry `path`, or None where there is none."""
    try:
        found = path.lstat()
    except OSError:
        return None
    return found.st_dev, found.st_ino


def restore_files(source: Path, out_dir: Path, task: str, weights: Path | None = None,
                  config: InferenceConfig | None = None, device: str = "auto", progress: bool = True
                  ) -> RestoreReport:
    """Restore every image of `source` (a file or folder) into `out_dir` as PNG."""
    source, out_dir = Path(source), Path(out_dir)
    targets = output_targets(find_images(source), source, out_dir)
    torch_device = resolve_device(device)
    weights, net = load_task_weights(task, weights)
    net = prepare_network(net, torch_device)
    config = config or InferenceConfig()
    report = RestoreReport()
    with progress_bar(f"restore ({task})", total=len(targets), unit="images", enabled=progress) as advance:
        for image_path, target in targets.items():
            try:
                image = read_user_image(image_path)
            except ImrestoreError as error:
                report.failed[image_path] = str(error)
                advance(1)
                continue
            batch = torch.from_numpy(image.rgb).permute(2, 0, 1)[None]
            restored = restore_images(net, batch, config)[0].float()
            if not torch.isfinite(restored).all():
                raise ImrestoreError(f"{image_path}: the network returned non-finite values; the weights in "
                                     f"{weights} are broken (retrain, or restore with other weights)")
            with writing(target):
                write_user_image(target, restored.permute(1, 2, 0).cpu().numpy(), image)
            if image.notes:
                report.notes[image_path] = image.notes
            report.written.append(target)
            advance(1)
    return report
