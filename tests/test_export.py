"""`imrestore export --format onnx`: both architectures, through the CLI, run by onnxruntime at sizes and batches
other than the one exported, against PyTorch."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from imrestore.app.cli import main
from imrestore.errors import ImrestoreError
from imrestore.models.weights import load_network
from imrestore.training import RestorationModule, export_weights

MODELS = {
    "paper": {"blocks": 1, "features": 8, "dcn_kernel": 4},  # the even kernel: asymmetric padding in the graph
    "nafnet": {"arch": "nafnet", "nafnet": {"width": 4}},  # 4 levels: padded to multiples of 16
}
# Float32 with other summation orders: measured 3.6e-7 (NAFNet) and 1.3e-6 (the paper's network) at their default
# sizes with random weights, 2.8e-6 for the sample's trained denoiser; the bound leaves room.
TOLERANCE = 1e-5


def trained_looking_weights(folder, model: dict, task: str = "denoise"):
    torch.manual_seed(0)
    module = RestorationModule(model, {})
    with torch.no_grad():  # fresh networks are (near) identities; give every part something to compute
        for name, parameter in module.net.named_parameters():
            if "offset_mask" in name or name.startswith("tail.") or name.endswith(("beta", "gamma")):
                parameter.normal_(std=0.05)
    export_weights(module, folder, task)
    return folder


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_the_exported_model_matches_pytorch_at_any_size_and_batch(arch, tmp_path, capsys):
    weights = trained_looking_weights(tmp_path / "model", MODELS[arch])
    out = tmp_path / "denoise.onnx"
    main(["export", "--task", "denoise", "--weights", str(weights), "--out", str(out)])
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "onnxruntime matches PyTorch to" in printed

    net = load_network(weights).eval()
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for shape in ((1, 3, 64, 64), (3, 3, 37, 53), (1, 3, 16, 100)):
        image = rng.random(shape, dtype=np.float32)
        restored = session.run(None, {"image": image})[0]
        with torch.no_grad():
            expected = net(torch.from_numpy(image)).numpy()
        assert restored.shape == shape
        assert np.abs(restored - expected).max() < TOLERANCE
        assert np.abs(expected - image).max() > 1e-3, "the network changes the image, so a match means something"
    metadata = {entry.key: entry.value for entry in onnx.load(str(out)).metadata_props}
    assert json.loads(metadata["imrestore.model"])["arch"] == arch and metadata["imrestore.task"] == "denoise"


def test_weights_of_the_other_task_are_refused(tmp_path):
    weights = trained_looking_weights(tmp_path / "model", MODELS["paper"], task="deblur")
    with pytest.raises(SystemExit):
        main(["export", "--task", "denoise", "--weights", str(weights), "--out", str(tmp_path / "x.onnx")])
    assert not (tmp_path / "x.onnx").exists()
    with pytest.raises(ImrestoreError, match="was trained for deblur, not denoise"):
        from imrestore.app.restore import load_task_weights
        load_task_weights("denoise", weights)


@pytest.mark.parametrize("where, message", [
    ("a_folder", "a_folder is a folder; expected the ONNX model file (--out)"),
    ("afile/denoise.onnx", "afile is a file; expected the folder for {tmp}/afile/denoise.onnx (a folder: an existing"),
])
def test_an_out_that_cannot_be_written_is_refused_before_exporting(tmp_path, capsys, where, message):
    import time

    weights = trained_looking_weights(tmp_path / "model", MODELS["paper"])
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "afile").write_text("mine")
    started = time.monotonic()
    with pytest.raises(SystemExit):
        main(["export", "--task", "denoise", "--weights", str(weights), "--out", str(tmp_path / where)])
    assert time.monotonic() - started < 10, "refused at once, not after the export"
    assert message.format(tmp=tmp_path) in capsys.readouterr().err
    assert list((tmp_path / "a_folder").iterdir()) == [] and (tmp_path / "afile").read_text() == "mine"


def test_a_checkpoint_of_the_other_task_is_not_exported_as_this_one(tmp_path, capsys):
    from imrestore.training import LAST_CHECKPOINT, RUN_FILE

    torch.manual_seed(0)
    module = RestorationModule(MODELS["paper"], {})
    checkpoints = tmp_path / "build" / "checkpoints" / "deblur"  # as train@deblur leaves them
    checkpoints.mkdir(parents=True)
    torch.save({"hyper_parameters": dict(module.hparams),
                "state_dict": {f"net.{k}": v for k, v in module.net.state_dict().items()}},
               checkpoints / LAST_CHECKPOINT)
    (checkpoints / RUN_FILE).write_text(json.dumps({"task": "deblur", "model": MODELS["paper"]}))
    with pytest.raises(SystemExit):
        main(["export", "--task", "denoise", "--weights", str(checkpoints / LAST_CHECKPOINT),
              "--out", str(tmp_path / "x.onnx")])
    assert "was trained for deblur, not denoise" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists(), "no model labelled imrestore.task=denoise"
