"""RichBoyNet shapes, state_dict keys and layer_shapes()."""

import torch

from lora_mnist.model import LINEAR_NAMES, RichBoyNet, layer_shapes


def test_forward_shape_accepts_images_and_flat_rows():
    torch.manual_seed(0)
    net = RichBoyNet(16, 32)
    images = torch.randn(5, 1, 28, 28)
    assert net(images).shape == (5, 10)
    assert torch.equal(net(images), net(images.reshape(5, 784)))


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
