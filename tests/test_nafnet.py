"""NAFNet as `model.arch: nafnet`: its structure and release layout, its config, tiling on its grid, training and
weights that rebuild the right architecture."""

from __future__ import annotations

import pytest
import torch

from cache_builders import write_cache
from imrestore.errors import ImrestoreError
from imrestore.evaluation.inference import InferenceConfig, restore_images
from imrestore.models.layers import count_macs
from imrestore.models.nafnet import NAMED_SIZES, PUBLISHED_GMACS, NAFBlock, NAFNet, NAFNetConfig
from imrestore.models.network import ModelConfig, RestorationNet, build_network, describe_network
from imrestore.models.weights import load_network

TINY = NAFNetConfig(width=4, enc_blocks=(1, 1), middle_blocks=1, dec_blocks=(1, 1))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def trained_looking(net: torch.nn.Module) -> torch.nn.Module:
    """Non-zero block scales: a fresh NAFBlock is the identity, which would hide what the blocks compute."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, NAFBlock):
                module.beta.normal_(0, 0.5)
                module.gamma.normal_(0, 0.5)
    return net.eval()


def test_a_fresh_block_is_the_identity_and_a_trained_one_is_not():
    block = NAFBlock(8)
    x = torch.randn(2, 8, 9, 7)
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)
    assert not torch.allclose(trained_looking(block)(x), x, atol=1e-3)


@pytest.mark.parametrize("size", [(16, 16), (21, 18), (3, 5)])
def test_any_image_size_comes_back_the_same_size(size):
    net = trained_looking(NAFNet(TINY))
    x = torch.rand(2, 3, *size)
    assert net(x).shape == x.shape and torch.isfinite(net(x)).all()
    assert net.size_multiple == 4 and NAFNet(NAFNetConfig()).size_multiple == 16


def test_parameter_names_follow_the_release_so_published_weights_load():
    names = set(NAFNet(NAFNetConfig(width=8, enc_blocks=(1, 2), middle_blocks=1, dec_blocks=(1, 1))).state_dict())
    for name in ("intro.weight", "ending.bias", "encoders.1.1.conv2.weight", "downs.1.weight", "ups.0.0.weight",
                 "middle_blks.0.sca.1.weight", "decoders.1.0.norm2.weight", "middle_blks.0.beta",
                 "decoders.0.0.gamma", "encoders.0.0.conv5.bias", "encoders.0.0.norm1.bias"):
        assert name in names
    assert not any("sg" in name or "dropout" in name for name in names)  # no parameters of their own


@pytest.mark.parametrize("name", sorted(NAMED_SIZES))
def test_published_sizes_cost_what_the_nafnet_paper_says(name):
    """NAFNet's paper: 16 GMACs at width 32, 65 at width 64 (256² input). Ours counts conv MACs only."""
    gmacs = count_macs(NAFNet(NAMED_SIZES[name])) / 1e9
    assert gmacs == pytest.approx(PUBLISHED_GMACS[name], rel=0.04)


def test_the_config_takes_a_name_or_sizes_and_names_what_is_wrong():
    assert NAFNetConfig.from_params("sidd-width32") == NAMED_SIZES["sidd-width32"]
    config = ModelConfig.from_params({"arch": "nafnet", "nafnet": {"width": 8, "enc_blocks": [2, 1],
                                                                   "dec_blocks": [1, 1]}})
    assert config.nafnet == NAFNetConfig(width=8, enc_blocks=(2, 1), middle_blocks=1, dec_blocks=(1, 1))
    assert ModelConfig.from_params(config.to_params()) == config  # what config.json records reads back
    cases = [({"nafnet": "gopro-width16"}, "model.nafnet must be a mapping of sizes or one of gopro-width32"),
             ({"nafnet": [1]}, r"model.nafnet must be a mapping of sizes .*, found \[1\]"),
             ({"nafnet": {"depth": 3}}, "unknown key model.nafnet.depth; expected one of dec_blocks, enc_blocks"),
             ({"nafnet": {"enc_blocks": [1, 1], "dec_blocks": [1]}},
              r"model.nafnet.dec_blocks must be as many levels as enc_blocks \(2\), found \[1\]"),
             ({"nafnet": {"enc_blocks": [1, -1], "dec_blocks": [1, 1]}}, "enc_blocks must be a list of block counts"),
             ({"nafnet": {"width": 0}}, r"model.nafnet.width must be an integer ≥ 1, found 0"),
             ({"arch": "restormer"}, "model.arch must be one of 'paper', 'nafnet', found 'restormer'")]
    for mapping, message in cases:
        with pytest.raises(ImrestoreError, match=message):
            ModelConfig.from_params(mapping)


def test_build_network_follows_arch_and_describe_says_what_was_built():
    assert isinstance(build_network(ModelConfig()), RestorationNet)
    net = build_network(ModelConfig(arch="nafnet", nafnet=TINY))
    assert isinstance(net, NAFNet)
    described = describe_network(net)
    assert described["arch"] == "nafnet" and described["enc_blocks"] == [1, 1] and described["width"] == 4
    assert describe_network(torch.compile(net))["parameters"] == described["parameters"]


def test_tiles_on_nafnets_grid_and_a_tile_off_it_is_refused():
    net = trained_looking(NAFNet(NAFNetConfig(width=4)))  # 4 levels: a 16-pixel grid
    image = torch.rand(1, 3, 80, 72)
    untiled = restore_images(net, image, InferenceConfig(tile=None))
    tiled = restore_images(net, image, InferenceConfig(tile=48, overlap=16))
    assert tiled.shape == image.shape
    # Only the simplified channel attention's per-tile pooling separates the two (the paper network's case).
    assert (tiled - untiled).abs().mean() < 0.05
    with pytest.raises(ImrestoreError, match="tile 36 must be a multiple of 16 for this network"):
        restore_images(net, image, InferenceConfig(tile=36, overlap=16))


def test_training_nafnet_exports_weights_that_rebuild_nafnet(tmp_path):
    from imrestore.training import TrainConfig, train

    clean = torch.rand(12, 24, 24, 3).mul(255).to(torch.uint8).numpy()
    noisy = (clean.astype(int) + torch.randint(-20, 21, clean.shape).numpy()).clip(0, 255).astype("uint8")
    cache = write_cache(tmp_path / "cache", {"train": (noisy, clean), "val": (noisy[:4], clean[:4])})
    params = {"model": {"arch": "nafnet", "nafnet": {"width": 4, "enc_blocks": [1, 1], "dec_blocks": [1, 1]}},
              "train": {"max_steps": 3, "steps_per_epoch": 3, "crop": 16, "batch_size": 2, "num_workers": 0}}
    module = train(TrainConfig.from_params(params, "denoise"), cache_dir=cache, checkpoint_dir=tmp_path / "ckpt",
                   model_dir=tmp_path / "model", live_dir=None)
    assert module.trainer.global_step == 3
    net = load_network(tmp_path / "model")
    assert isinstance(net, NAFNet) and net.config == NAFNetConfig(width=4, enc_blocks=(1, 1), dec_blocks=(1, 1))
    x = torch.rand(1, 3, 20, 28)
    with torch.no_grad():
        torch.testing.assert_close(net(x), module.net.eval()(x))
    assert any(block.beta.abs().sum() > 0 for block in net.modules() if isinstance(block, NAFBlock)), "it trained"


# --- weights trained elsewhere --------------------------------------------------------------------------------

def test_a_release_file_rebuilds_its_nafnet_from_the_tensors_alone(tmp_path):
    from imrestore.models.weights import load_published

    config = NAFNetConfig(width=8, enc_blocks=(1, 2, 0), middle_blocks=2, dec_blocks=(0, 1, 1))
    net = trained_looking(NAFNet(config))
    x = torch.rand(1, 3, 24, 40)
    for name, saved in (("release.pth", {"params": net.state_dict(), "params_ema": net.state_dict()}),
                        ("bare.pt", net.state_dict()),
                        ("ddp.pth", {f"module.{k}": v for k, v in net.state_dict().items()})):
        torch.save(saved, tmp_path / name)
        loaded = load_published(tmp_path / name)
        assert isinstance(loaded, NAFNet) and loaded.config == config
        with torch.no_grad():
            torch.testing.assert_close(loaded.eval()(x), net(x), rtol=0, atol=0)


def test_the_papers_network_is_recognised_with_its_ablations_and_norm(tmp_path):
    from imrestore.models.weights import load_published

    config = ModelConfig(blocks=2, features=8, dcn_kernel=4, lka=False, attention=True, norm="batch")
    torch.save(RestorationNet(config).state_dict(), tmp_path / "paper.pth")
    loaded = load_published(tmp_path / "paper.pth")
    assert isinstance(loaded, RestorationNet)
    assert (loaded.config.blocks, loaded.config.features, loaded.config.dcn_kernel, loaded.config.lka,
            loaded.config.attention, loaded.config.norm) == (2, 8, 4, False, True, "batch")


def test_files_that_are_not_known_weights_are_refused_by_name(tmp_path):
    from imrestore.models.weights import load_published

    torch.save({"encoder.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ImrestoreError, match=r"other.pth: expected NAFNet's release layout .* found tensors "
                                             r"encoder.weight"):
        load_published(tmp_path / "other.pth")
    truncated = {"intro.weight": torch.zeros(4, 3, 3, 3), "ending.weight": torch.zeros(3, 4, 3, 3)}
    torch.save({"params": truncated, "optimizer": [1, 2]}, tmp_path / "broken.pth")
    with pytest.raises(ImrestoreError, match=r"broken.pth does not fit the model in the architecture its tensor"):
        load_published(tmp_path / "broken.pth")

    class Payload:
        def __reduce__(self):
            return (print, ("this ran",))

    torch.save({"params": Payload()}, tmp_path / "pickled.pth")
    with pytest.raises(ImrestoreError, match=r"pickled.pth cannot be loaded safely \(weights_only=True\)"):
        load_published(tmp_path / "pickled.pth")
