"""The MNIST models, deterministic (masked) training, evaluation and checkpoints."""

import numpy as np
import pytest
import torch
from torch import nn

from weights.datasets import load_mnist, to_float
from weights.models import MODELS, build_model, lenet5, lenet300
from weights.train import (
    RECIPES,
    Recipe,
    evaluate,
    load_checkpoint,
    save_checkpoint,
    train,
)

# 32 batches of 16: enough to learn, small enough to keep the file under a few seconds.
TINY = Recipe(epochs=1, batch_size=16, lr=0.05, max_shift=1)


@pytest.fixture(scope="module")
def tiny_data():
    images, labels = load_mnist("train")
    return images[:512], labels[:512], images[512:1024], labels[512:1024]


def _tiny_train(name, tiny_data, seed=0, masks=None, progress=None):
    images, labels, _, _ = tiny_data
    torch.manual_seed(seed)
    model = build_model(name)
    train(model, images, labels, TINY, seed=seed, masks=masks, progress=progress)
    return model


@pytest.mark.parametrize(
    ("name", "count"),
    [("lenet300", 266_610), ("lenet5", 431_080)],
)
def test_parameter_count(name, count):
    model = build_model(name)
    assert sum(p.numel() for p in model.parameters()) == count


@pytest.mark.parametrize("name", sorted(MODELS))
def test_output_shape(name):
    images, _ = load_mnist("test")
    model = build_model(name).eval()
    with torch.no_grad():
        out = model(torch.from_numpy(to_float(images[:7])))
    assert out.shape == (7, 10)
    assert out.dtype == torch.float32


def test_layers_are_compilable():
    allowed = (nn.Conv2d, nn.Linear, nn.ReLU, nn.MaxPool2d, nn.Flatten)
    for name in MODELS:
        assert all(isinstance(m, allowed) for m in build_model(name).children())
    # Caffe's LeNet: no ReLU between the convolutions and the pools.
    assert [type(m) for m in lenet5()][:4] == [nn.Conv2d, nn.MaxPool2d, nn.Conv2d, nn.MaxPool2d]
    assert [type(m) for m in lenet300()] == [
        nn.Flatten, nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear,
    ]  # fmt: skip


def test_unknown_model():
    with pytest.raises(ValueError, match="lenet300.*lenet5"):
        build_model("alexnet")


def test_recipes_cover_models():
    assert set(RECIPES) == set(MODELS)
    with pytest.raises(ValueError, match="schedule"):
        Recipe(epochs=1, batch_size=32, lr=0.1, schedule="linear")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_training_is_deterministic_and_learns(name, tiny_data):
    _, _, held_images, held_labels = tiny_data
    torch.manual_seed(0)
    untrained_error = evaluate(build_model(name), held_images, held_labels)
    calls = []
    first = _tiny_train(name, tiny_data, progress=lambda *args: calls.append(args))
    second = _tiny_train(name, tiny_data)
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key
    # 512 images / 16 = 32 batches: one call, at the end of the epoch.
    assert [c[:4] for c in calls] == [(1, 1, 32, 32)]
    assert np.isfinite(calls[0][4])
    # It learned: much better than its own starting point on images it has not seen.
    assert evaluate(first, held_images, held_labels) < untrained_error - 20.0
    assert first.training  # evaluate restores the mode


def test_other_seed_differs(tiny_data):
    a = _tiny_train("lenet300", tiny_data, seed=0)
    b = _tiny_train("lenet300", tiny_data, seed=1)
    assert not torch.equal(a[1].weight, b[1].weight)


def test_masks_keep_pruned_weights_zero(tiny_data):
    generator = torch.Generator().manual_seed(1)
    shapes = {"0.weight": (20, 1, 5, 5), "5.weight": (500, 800)}
    masks = {k: (torch.rand(s, generator=generator) < 0.3).float() for k, s in shapes.items()}
    model = _tiny_train("lenet5", tiny_data, masks=masks)
    params = dict(model.named_parameters())
    for key, mask in masks.items():
        weight = params[key].detach()
        assert torch.all(weight[mask == 0] == 0), key
        assert torch.count_nonzero(weight[mask == 1]) == torch.count_nonzero(mask), key
    # Unmasked parameters still train.
    assert torch.count_nonzero(params["2.weight"]) == params["2.weight"].numel()


def test_bad_mask():
    model = lenet300()
    images, labels = np.zeros((4, 28, 28), np.uint8), np.zeros(4, np.uint8)
    with pytest.raises(ValueError, match="unknown parameter"):
        train(model, images, labels, TINY, seed=0, masks={"9.weight": torch.ones(1)})
    with pytest.raises(ValueError, match="shape"):
        train(model, images, labels, TINY, seed=0, masks={"1.weight": torch.ones(3, 3)})


def test_checkpoint_round_trip(tiny_data, tmp_path):
    model = _tiny_train("lenet5", tiny_data)
    _, _, held_images, held_labels = tiny_data
    info = {
        "model": "lenet5",
        "seed": 0,
        "test_error_pct": evaluate(model, held_images, held_labels),
    }
    path = tmp_path / "sub" / "lenet5.pt"
    save_checkpoint(model, info, path)
    loaded, loaded_info = load_checkpoint(path)
    assert loaded_info == info
    assert not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    # Plain content: loadable by torch's restricted unpickler.
    payload = torch.load(path, weights_only=True)
    assert set(payload) == {"model", "state_dict", "info"}
    assert payload["model"] == "lenet5"


def test_checkpoint_name_must_match(tmp_path):
    with pytest.raises(ValueError, match="lenet5"):
        save_checkpoint(lenet300(), {"model": "lenet5"}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="alexnet"):
        save_checkpoint(lenet300(), {"model": "alexnet"}, tmp_path / "x.pt")


def test_checkpoint_missing(tmp_path):
    path = tmp_path / "nothing.pt"
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_checkpoint(path)


def test_checkpoint_garbage(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"\x00\x01 definitely not a checkpoint" * 100)
    with pytest.raises(ValueError, match="garbage.pt.*not an Espalier checkpoint"):
        load_checkpoint(path)


def test_checkpoint_foreign_dict(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="foreign.pt.*not an Espalier checkpoint"):
        load_checkpoint(path)
    torch.save({"model": "lenet300", "state_dict": {"1.weight": torch.zeros(3)}, "info": {}}, path)
    with pytest.raises(ValueError, match="foreign.pt.*lenet300"):
        load_checkpoint(path)


def test_float_inputs_match_uint8(tiny_data):
    """Float inputs (a user's own data) are used as they are: ``to_float`` first is the same."""
    images, labels, held_images, held_labels = tiny_data
    model = _tiny_train("lenet300", tiny_data)
    assert evaluate(model, to_float(held_images), held_labels) == evaluate(
        model, held_images, held_labels
    )
    recipe = Recipe(epochs=1, batch_size=16, lr=0.05)  # no shifts: they need uint8 images
    a, b = lenet300(), lenet300()
    b.load_state_dict(a.state_dict())
    train(a, images, labels, recipe, seed=0)
    train(b, to_float(images), labels, recipe, seed=0)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
