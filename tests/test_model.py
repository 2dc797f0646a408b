"""base/model.py: RichBoyNet shapes, state_dict keys, layer_shapes() (config.py), and exact checkpoints."""

import pytest
import torch

from lora_mnist.artifacts import safetensors_bytes
from lora_mnist.base.model import RichBoyNet, load_model, load_state, model_bytes, save_model
from lora_mnist.cli import ArtifactError
from lora_mnist.config import LINEAR_NAMES, N_CLASSES, N_PIXELS, layer_shapes


def test_forward_shape_accepts_images_and_flat_rows():
    torch.manual_seed(0)
    net = RichBoyNet(16, 32)
    images = torch.randn(5, 1, 28, 28)
    assert net(images).shape == (5, N_CLASSES)
    assert torch.equal(net(images), net(images.reshape(5, N_PIXELS)))


def test_state_dict_keys_are_plain():
    keys = set(RichBoyNet(16, 32).state_dict())
    assert keys == {f"{name}.{kind}" for name in LINEAR_NAMES for kind in ("weight", "bias")}


def test_layer_shapes_match_the_built_model():
    net = RichBoyNet(16, 32)
    for name, (n_in, n_out) in layer_shapes(16, 32).items():
        layer = getattr(net, name)
        assert (layer.in_features, layer.out_features) == (n_in, n_out)
        assert layer.weight.shape == (n_out, n_in)
    assert tuple(layer_shapes(16, 32)) == LINEAR_NAMES


def test_default_size_is_the_seed_s():
    assert sum(p.numel() for p in RichBoyNet().parameters()) == 2_807_010


def test_checkpoint_round_trip_is_exact_and_carries_the_sizes(tmp_path):
    torch.manual_seed(0)
    net = RichBoyNet(16, 32)
    save_model(net, tmp_path / "m.safetensors")
    assert (tmp_path / "m.safetensors").read_bytes() == model_bytes(net)  # the same bytes every time
    loaded = load_model(tmp_path / "m.safetensors")
    assert (loaded.linear1.out_features, loaded.linear2.out_features) == (16, 32)
    for (name, a), b in zip(net.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_load_state_refuses_what_strict_loading_would_refuse_or_cast(tmp_path):
    net = RichBoyNet(16, 32)
    good = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ArtifactError, match="^src.safetensors: tensor linear2.bias is torch.float64, expected "
                                            "torch.float32$"):
        load_state(net, {**good, "linear2.bias": good["linear2.bias"].double()}, "src.safetensors")
    with pytest.raises(ArtifactError, match=r"(?s)^src.safetensors: .*Missing key.*linear3.weight"):
        load_state(net, {k: v for k, v in good.items() if k != "linear3.weight"}, "src.safetensors")
    with pytest.raises(ArtifactError, match=r"(?s)^src.safetensors: .*size mismatch for linear1.bias"):
        load_state(net, {**good, "linear1.bias": torch.zeros(17)}, "src.safetensors")
    (tmp_path / "broken.safetensors").write_bytes(model_bytes(net)[:8] + b"garbage")
    with pytest.raises(ArtifactError, match="broken.safetensors: not a readable safetensors file"):
        load_model(tmp_path / "broken.safetensors")
    (tmp_path / "bare.safetensors").write_bytes(safetensors_bytes(good))  # no config in the metadata
    with pytest.raises(ArtifactError, match="bare.safetensors: metadata has no valid RichBoyNet config"):
        load_model(tmp_path / "bare.safetensors")
