"""Large Kernel Attention and the restoration network: structure, shapes, parameter counts, config errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from imrestore.errors import ImrestoreError
from imrestore.models.lka import LargeKernelAttention, lka_parameter_count
from imrestore.models.network import (
    ChannelAttention,
    ModelConfig,
    ModifiedResBlock,
    RestorationNet,
    count_parameters,
    parameter_table,
)

TINY = {"blocks": 1, "features": 4}  # the smallest network that still has every stage


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --- Large Kernel Attention -------------------------------------------------------------------------------


def test_lka_chains_its_convs_and_gates_the_input() -> None:
    lka = LargeKernelAttention(6)
    x = torch.randn(2, 6, 17, 19)
    chained = lka.pointwise(lka.depthwise_dilated(lka.depthwise(x)))
    separate = lka.pointwise(x) + lka.depthwise_dilated(x) + lka.depthwise(x)  # the authors' notebook defect
    out = lka(x)
    torch.testing.assert_close(out, chained * x)
    assert not torch.allclose(out, separate * x, atol=1e-3)


def test_lka_receptive_field_is_the_chained_one() -> None:
    # Chained, an output pixel sees 2 (5×5) + 9 (7×7, dilation 3) = 11 pixels away; applied separately the
    # reach would stop at 9. The gradient of one output pixel shows which inputs it reads.
    lka = LargeKernelAttention(2)
    x = torch.randn(1, 2, 31, 31, requires_grad=True)
    lka(x)[0, :, 15, 15].sum().backward()
    reach = x.grad[0].abs().sum(0)
    assert reach[15, 15 + 11] > 0 and reach[15 - 11, 15] > 0
    assert reach[15, 15 + 12] == 0 and reach[15, 15 - 12] == 0


@pytest.mark.parametrize("channels", [1, 8, 32, 128])
def test_lka_parameter_count_is_c_squared_plus_77c_with_biases(channels: int) -> None:
    assert count_parameters(LargeKernelAttention(channels)) == channels**2 + 77 * channels
    assert lka_parameter_count(channels) == channels**2 + 77 * channels


# --- network shapes and behaviour -------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", [3, 4])
@pytest.mark.parametrize("shape", [(1, 3, 37, 53), (2, 3, 64, 64), (1, 3, 30, 45)])
def test_output_shape_equals_input_shape(shape: tuple[int, ...], kernel: int) -> None:
    model = RestorationNet(ModelConfig(dcn_kernel=kernel, **TINY))
    x = torch.rand(shape)
    with torch.no_grad():
        assert model(x).shape == x.shape


def test_images_thinner_than_the_padding_still_work() -> None:
    model = RestorationNet(ModelConfig(**TINY)).eval()
    x = torch.rand(1, 3, 2, 5)
    with torch.no_grad():
        assert model(x).shape == x.shape


@pytest.mark.parametrize("kernel", [3, 4])
def test_fresh_network_starts_with_zero_offsets_and_finite_output(kernel: int) -> None:
    model = RestorationNet(ModelConfig(blocks=2, features=8, dcn_kernel=kernel))
    for dcn in (model.head, model.tail):
        assert torch.count_nonzero(dcn.offset_mask.weight) == 0 and torch.count_nonzero(dcn.offset_mask.bias) == 0
    with torch.no_grad():
        assert torch.isfinite(model(torch.rand(2, 3, 24, 28))).all()


def test_a_fresh_network_is_the_identity() -> None:
    """The tail starts at zero, so training starts from the degraded input's PSNR, not from a random residual."""
    model = RestorationNet(ModelConfig(**TINY))
    x = torch.rand(1, 3, 21, 18)
    with torch.no_grad():
        assert torch.equal(model(x), x)


def test_backward_reaches_every_parameter_after_the_first_step() -> None:
    # features 16: channel attention then has 64 // 16 = 4 hidden units; with 1 (features 4) a dead ReLU
    # would legitimately zero its gradient. The autouse seed keeps this deterministic.
    model = RestorationNet(ModelConfig(blocks=2, features=16))
    x, target = torch.rand(2, 3, 16, 20), torch.rand(2, 3, 16, 20)
    F.mse_loss(model(x), target).backward()
    # At step 0 only the zero-initialised tail learns: everything before it reaches the output through it.
    assert {name for name, p in model.named_parameters() if p.grad is not None and p.grad.any()} == {
        "tail.weight", "tail.bias"}
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    model.zero_grad()
    F.mse_loss(model(x), target).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert torch.count_nonzero(parameter.grad) > 0, name


# --- parameter counts -------------------------------------------------------------------------------------


def test_ablation_switches_remove_exactly_their_module() -> None:
    full = ModelConfig(blocks=3, features=8)
    channels = 4 * full.features
    attention_params = count_parameters(ChannelAttention(channels))
    total = count_parameters(RestorationNet(full))
    without_lka = count_parameters(RestorationNet(ModelConfig(blocks=3, features=8, lka=False)))
    without_attention = count_parameters(RestorationNet(ModelConfig(blocks=3, features=8, attention=False)))
    assert total - without_lka == 3 * (channels**2 + 77 * channels)
    assert total - without_attention == 3 * attention_params
    block = ModifiedResBlock(channels, lka=False, attention=False)
    assert not any(name.startswith(("lka.", "channel_attention.")) for name, _ in block.named_parameters())


def test_paper_sized_models_have_the_counts_we_report() -> None:
    nine = count_parameters(RestorationNet(ModelConfig(blocks=9)))
    twelve = count_parameters(RestorationNet(ModelConfig(blocks=12)))
    per_block = count_parameters(ModifiedResBlock(128))
    assert (nine, twelve, per_block) == (3_598_426, 4_669_426, 357_000)
    assert twelve - nine == 3 * per_block


def test_table_1_layers_are_where_the_paper_puts_them() -> None:
    model = RestorationNet(ModelConfig())
    assert model.body[0].conv1.weight.numel() == 147_456  # 128·128·3·3: one LKA-block conv at 128×64×64
    assert model.down2.conv1.weight.numel() == 73_728  # 64·128·3·3: the conv that reaches 128 channels


def test_parameter_table_rows_add_up_and_have_256_shapes() -> None:
    config = ModelConfig(blocks=9)
    rows = parameter_table(config)
    assert sum(params for _, _, params in rows) == count_parameters(RestorationNet(config))
    shapes = {name: shape for name, shape, _ in rows}
    assert shapes["head (DCN)"] == "32×256×256"
    assert shapes["down2"] == shapes["block9"] == "128×64×64"
    assert shapes["tail (DCN)"] == "3×256×256"
    assert len(rows) == 9 + 6


# --- configuration ----------------------------------------------------------------------------------------


def test_from_params_reads_a_section() -> None:
    assert ModelConfig.from_params({}) == ModelConfig()
    assert ModelConfig.from_params(None) == ModelConfig()
    config = ModelConfig.from_params({"blocks": 12, "dcn_kernel": 4, "lka": False})
    assert (config.blocks, config.dcn_kernel, config.lka, config.features) == (12, 4, False, 32)


@pytest.mark.parametrize(
    "mapping, key, found",
    [
        ({"block": 9}, "model.block", "unknown key"),
        ({"blocks": 0}, "model.blocks", "0"),
        ({"blocks": "9"}, "model.blocks", "'9'"),
        ({"blocks": True}, "model.blocks", "True"),
        ({"features": 2.5}, "model.features", "2.5"),
        ({"dcn_kernel": 5}, "model.dcn_kernel", "5"),
        ({"lka": "yes"}, "model.lka", "'yes'"),
        ({"attention": 1}, "model.attention", "1"),
        ({"dcn_backend": "cuda"}, "model.dcn_backend", "'cuda'"),
    ],
)
def test_from_params_names_the_bad_key(mapping: dict, key: str, found: str) -> None:
    with pytest.raises(ImrestoreError) as error:
        ModelConfig.from_params(mapping)
    assert key in str(error.value) and found in str(error.value)


def test_from_params_uses_the_callers_section_name_and_rejects_non_mappings() -> None:
    with pytest.raises(ImrestoreError, match=r"train\.model\.blocks"):
        ModelConfig.from_params({"blocks": -1}, where="train.model")
    with pytest.raises(ImrestoreError, match="must be a mapping"):
        ModelConfig.from_params([9])
    with pytest.raises(ImrestoreError, match=r"model\.dcn_kernel"):
        ModelConfig(dcn_kernel=2)


@pytest.mark.parametrize("height,width", [(16, 16), (23, 19), (7, 5)])
def test_the_phase_split_dilated_conv_equals_the_dilated_conv_values_and_gradients(height, width):
    from imrestore.models.lka import dilated_depthwise_by_phases

    torch.manual_seed(0)
    conv = nn.Conv2d(6, 6, kernel_size=7, padding=9, dilation=3, groups=6).double()
    x = torch.randn(2, 6, height, width, dtype=torch.float64, requires_grad=True)
    reference = conv(x)
    ours = dilated_depthwise_by_phases(x, conv)
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)
    projection = torch.randn_like(reference)
    expected = torch.autograd.grad((reference * projection).sum(), [x, conv.weight, conv.bias])
    actual = torch.autograd.grad((ours * projection).sum(), [x, conv.weight, conv.bias])
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


# --- Stability in eval mode --------------------------------------------------------------------------------
#
# With BatchNorm, eval mode applies fixed running statistics, so a body block's branch grows with its input and
# LKA's gate makes it quadratic: the residual stream of a trained 12-block network went 1.4 → 2.4 → 11 → 155 →
# … → inf and every test image came out NaN. LayerNorm makes each branch blind to the input's scale.


def _branch_growth(norm: str) -> float:
    """How a block's branch scales with its input, as a power: branch(k·x) ∝ k^degree between k = 1e3 and 1e4."""
    block = ModifiedResBlock(16, norm=norm).eval()
    x = torch.randn(2, 16, 12, 12)
    with torch.no_grad():
        low, high = (block.branch(k * x).abs().mean().item() for k in (1e3, 1e4))
    return math.log10(high / low)


def test_in_eval_mode_a_batchnorm_branch_is_quadratic_and_a_layernorm_branch_is_scale_free() -> None:
    assert _branch_growth("batch") == pytest.approx(2.0, abs=0.05)  # the mechanism of the NaN
    assert _branch_growth("layer") == pytest.approx(0.0, abs=1e-3)


@pytest.mark.parametrize("blocks", [9, 12])
def test_a_large_residual_stream_overflows_a_batchnorm_body_but_not_a_layernorm_one(blocks: int) -> None:
    """Training raises the branches' gain until an ordinary stream is "large"; a fresh body needs a big one."""
    stream = torch.randn(1, 32, 16, 16) * 1e5
    out = {}
    for norm in ("batch", "layer"):
        torch.manual_seed(0)
        body = RestorationNet(ModelConfig(blocks=blocks, features=8, norm=norm)).body.eval()
        with torch.no_grad():
            out[norm] = body(stream)
    assert not torch.isfinite(out["batch"]).all()
    assert torch.isfinite(out["layer"]).all()
    assert out["layer"].abs().max() < 2 * stream.abs().max()  # each block adds a bounded amount


def test_layernorm2d_normalises_each_pixel_over_its_channels() -> None:
    from imrestore.models.network import LayerNorm2d

    norm = LayerNorm2d(6)
    x = torch.randn(2, 6, 5, 7) * 3 + 1
    y = norm(x)
    torch.testing.assert_close(y.mean(dim=1), torch.zeros(2, 5, 7), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=1, unbiased=False), torch.ones(2, 5, 7), atol=1e-4, rtol=0)
    channels_last = norm(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(channels_last, y)


def test_every_block_starts_at_the_configured_layer_scale_and_a_bad_one_is_named():
    for value in (1.0, 0.01):
        net = RestorationNet(ModelConfig(blocks=2, features=8, layer_scale=value))
        for block in net.body:  # float32 holds 0.01 as 0.0099999998
            assert torch.equal(block.scale, torch.full((1, 32, 1, 1), value))
    assert ModelConfig.from_params({"layer_scale": 0.1}).layer_scale == 0.1
    with pytest.raises(ImrestoreError, match=r"model\.layer_scale must be a number > 0, found 0"):
        ModelConfig.from_params({"layer_scale": 0})
