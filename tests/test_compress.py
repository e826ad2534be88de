"""The compression pipeline and the bring-your-own-model API on small synthetic cases."""

import numpy as np
import pytest
import torch
from torch import nn

from golden.model import GoldenModel
from weights.compress import (
    CompressConfig,
    LayerPlan,
    ModelError,
    compress,
    extract_units,
    kmeans_1d,
    prune_masks,
)
from weights.image import Activation, Kind, read_image
from weights.torchref import float_model


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 2, stride=2),
        nn.Flatten(), nn.Dropout(0.1), nn.Linear(6 * 2 * 2, 8), nn.ReLU(), nn.Linear(8, 3))


def synthetic_data(n=256, seed=0):
    """A learnable 3-class task on 2x8x8 float inputs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(0, 0.3, (n, 2, 8, 8)).astype(np.float32)
    for c in range(3):  # class c lights a 3x3 patch at its own place
        x[y == c, 0, 2 * c : 2 * c + 3, 2 * c : 2 * c + 3] += 1.5
    return x, y


def trained_small_net(x, y):
    model = small_net()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        opt.step()
    return model.eval()


def test_extract_units_geometry():
    units = extract_units(small_net(), (2, 8, 8))
    assert [u.kind for u in units] == [Kind.CONV, Kind.CONV, Kind.FC, Kind.FC]
    assert [u.relu for u in units] == [True, False, True, False]
    assert (units[0].pool, units[0].pool_stride) == (2, 2)
    assert units[1].in_shape == (4, 4, 4) and units[1].out_shape == (6, 2, 2)
    assert units[2].in_shape == (24, 1, 1)


@pytest.mark.parametrize("model, message", [
    (nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4)), "'1': BatchNorm2d is not"),
    (nn.Sequential(nn.Conv2d(2, 4, 3, groups=2)), "grouped"),
    (nn.Sequential(nn.Conv2d(2, 4, 3, padding="same")), "padding='same'"),
    (nn.Sequential(nn.Conv2d(2, 4, (3, 2))), "non-square kernel"),
    (nn.Sequential(nn.Conv2d(3, 4, 3)), "expects 3 input channels"),
    (nn.Sequential(nn.Conv2d(2, 4, 3), nn.Linear(144, 2)), "needs a Flatten"),
    (nn.Sequential(nn.Flatten(), nn.Linear(100, 2)), "expects 100 inputs"),
    (nn.Sequential(nn.ReLU(), nn.Conv2d(2, 4, 3)), "ReLU must follow"),
    (nn.Sequential(nn.Flatten(), nn.Linear(128, 4), nn.MaxPool2d(2)), "MaxPool2d must follow"),
    (nn.Sequential(nn.Conv2d(2, 4, 3), nn.Sigmoid()), "Sigmoid"),
    (nn.Sequential(nn.ReLU()), "ReLU must follow"),
    (nn.Sequential(nn.Conv2d(2, 4, 9)), "does not fit"),
])
def test_unsupported_models_are_refused_naming_the_layer(model, message):
    with pytest.raises(ModelError, match=message):
        extract_units(model, (2, 8, 8))


def test_prune_masks_keep_largest_and_break_ties_by_position():
    w = np.array([[0.1, -0.5, 0.5], [0.2, 0.0, -0.05]])
    m = prune_masks({"a": w}, {"a": 0.5})["a"]
    assert m.tolist() == [[False, True, True], [True, False, False]]
    assert prune_masks({"a": w}, {"a": 0.01})["a"].sum() == 1


def test_kmeans_linear_init_and_known_clusters():
    v = np.array([-1.0, -0.9, -1.1, 2.0, 2.1, 1.9, 0.05])
    c, a = kmeans_1d(v, 3)
    assert np.allclose(sorted(c), [-1.0, 0.05, 2.0])
    assert len(set(a[:3])) == 1 and len(set(a[3:6])) == 1
    c1, a1 = kmeans_1d(v, 1)
    assert np.allclose(c1, [v.mean()]) and set(a1) == {0}


def test_bring_your_own_model_end_to_end():
    x, y = synthetic_data()
    model = trained_small_net(x, y)
    with torch.no_grad():
        assert np.mean(model(torch.from_numpy(x)).argmax(1).numpy() == y) > 0.95
    config = CompressConfig(plans=(LayerPlan(keep=0.8, weight_bits=4, run_bits=2),
                                   LayerPlan(keep=0.5, weight_bits=3, run_bits=3),
                                   LayerPlan(keep=0.5, weight_bits=3, run_bits=2),
                                   LayerPlan(keep=1.0, weight_bits=2, run_bits=0)),
                            retrain_epochs=1, batch_size=32, calib_size=128)
    image, data, report = compress(model, (x, y), (x, y), config)
    assert read_image(data).layers[0].activation == Activation.RELU
    assert report["bytes"] == len(data)
    kept = [np.count_nonzero(layer.weights() != 0) for layer in image.layers]
    sizes = [layer.weights().size for layer in image.layers]
    assert all(k <= round(p.keep * s) for k, p, s in zip(kept, config.plans, sizes, strict=True))
    for layer, plan in zip(image.layers, config.plans, strict=True):
        assert len(np.unique(layer.weights()[layer.weights() != 0])) <= 1 << plan.weight_bits
    # The golden model and float inference on the same decoded weights agree closely.
    golden = GoldenModel(image).predict(x)
    with torch.no_grad():
        ref = float_model(image)(torch.from_numpy(x)).argmax(1).numpy()
    assert np.mean(golden == ref) > 0.9
    assert np.mean(golden == y) > 0.8


def test_compress_is_deterministic():
    x, y = synthetic_data(64)
    config = CompressConfig(plans=(LayerPlan(keep=0.5),) * 4, retrain_epochs=1, calib_size=64,
                            batch_size=16)
    a = compress(small_net(), (x, y), (x, y), config)[1]
    b = compress(small_net(), (x, y), (x, y), config)[1]
    assert a == b


def test_plan_count_and_config_validation():
    x, y = synthetic_data(16)
    with pytest.raises(ValueError, match="3 layer plans for 4"):
        compress(small_net(), (x, y), (x, y), CompressConfig(plans=(LayerPlan(),) * 3))
    with pytest.raises(ValueError, match="keep"):
        LayerPlan(keep=0.0)
    with pytest.raises(ValueError, match="bw"):
        CompressConfig(plans=(), bw=12)


def test_torch_dataset_input():
    x, y = synthetic_data(64)
    ds = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    config = CompressConfig(plans=(LayerPlan(keep=0.7),) * 4, retrain_epochs=0, calib_size=32)
    image, _, _ = compress(small_net(), ds, ds, config)
    assert image.input_shape == (2, 8, 8)
