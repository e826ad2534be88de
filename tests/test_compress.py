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
)
from weights.image import Activation, Kind, read_image
from weights.prune import magnitude_mask
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


def test_magnitude_mask_keeps_largest_and_breaks_ties_by_position():
    w = np.array([[0.1, -0.5, 0.5], [0.2, 0.0, -0.05]])
    m = magnitude_mask(w, 0.5)
    assert m.tolist() == [[False, True, True], [True, False, False]]
    assert magnitude_mask(w, 0.01).sum() == 1
    # Among a prior mask's survivors only: a pruned weight never comes back.
    prior = np.array([[True, False, True], [True, True, True]])
    assert magnitude_mask(w, 0.5, prior).tolist() == [[True, False, True], [True, False, False]]


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


def test_choose_fl_known_answers():
    from weights.compress import choose_fl

    # 0.5 and -0.25 are exact at fl 2..7; fl 8 saturates 0.5 (128 > 127): the largest exact wins.
    assert choose_fl(np.array([0.5, -0.25]), 8) == 7
    # 1.0 is exact at fl 6 (64); fl 7 gives 127/128. A 16-bit width moves it up by 8.
    assert choose_fl(np.array([1.0]), 8) == 6
    assert choose_fl(np.array([1.0]), 16) == 14
    # Weighted error: many small values pull the choice to a finer step that clips the outlier.
    v = np.array([3.9, 0.011, -0.013, 0.012])
    assert choose_fl(v, 8) == 5
    assert choose_fl(v, 8, weights=np.array([1.0, 1e6, 1e6, 1e6])) > 5


def test_choose_activation_fl_known_answer():
    from weights.compress import choose_activation_fl

    # Accumulators at fl 10 for outputs up to ~5.9: fl 4 holds 5.9 (94/16), fl 5 saturates it.
    acc = np.array([[6000, -300, 1024]])  # 5.86, -0.29, 1.0
    ref = acc * 2.0**-10
    out_fl, b_fl, bias, y = choose_activation_fl(acc, np.zeros(3), 10, ref, 8, use_relu=False)
    assert out_fl == 4 and b_fl == 8 and bias.tolist() == [0, 0, 0]
    assert y.tolist() == [[94, -5, 16]]
    # A bias of 2.5 lifts the peak to 8.36: fl 4 would clip it at 7.94, so fl 3 wins, and the
    # bias is stored at fl 3 + 4 = 7 (2.5 * 128 = 320). ReLU zeroes the negative output.
    ref = np.maximum(ref + [2.5, 0, 0], 0)
    out_fl, b_fl, bias, y = choose_activation_fl(acc, np.array([2.5, 0, 0]), 10, ref, 8,
                                                 use_relu=True)
    assert (out_fl, b_fl, bias.tolist()) == (3, 7, [320, 0, 0])
    assert y.tolist() == [[67, 0, 8]]


def test_centroid_update_is_the_summed_gradient():
    """Deep Compression 3.3: one SGD step moves each centroid by lr x the sum of its weights'
    gradients; the assignment and the pruned weight stay put."""
    from weights.train import Recipe, train

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    y = np.array([0, 1] * 4)
    assign = torch.tensor([[0, 0, 1, -1], [1, 1, 0, 2]])
    cents = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    # The gradient each weight gets at the start: computed independently here.
    with torch.no_grad():
        model[1].weight.copy_(torch.where(assign >= 0, cents[assign.clamp(min=0)], 0.0))
        bias = model[1].bias.clone()
    w = model[1].weight.detach().clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(torch.from_numpy(x) @ w.T + bias, torch.from_numpy(y))
    (g,) = torch.autograd.grad(loss, w)
    want = cents.clone()
    for k in range(3):
        want[k] -= 0.5 * g[assign == k].sum().double()
    recipe = Recipe(epochs=1, batch_size=8, lr=0.5, momentum=0.0, weight_decay=0.0,
                    schedule="step")
    train(model, x, y, recipe, seed=0, shared={"1.weight": (assign, cents)})
    assert torch.allclose(cents, want, atol=1e-6)
    w_after = model[1].weight.detach()
    assert w_after[0, 3] == 0
    assert torch.allclose(w_after, torch.where(assign >= 0, cents[assign.clamp(min=0)], 0.0)
                          .float())


def test_pruned_weights_stay_zero_through_the_pipeline():
    x, y = synthetic_data(128)
    model = trained_small_net(x, y)
    config = CompressConfig(plans=(LayerPlan(keep=0.5),) * 4, prune_rounds=2, retrain_epochs=1,
                            finetune_epochs=1, calib_size=64, batch_size=16)
    image, _, report = compress(model, (x, y), (x, y), config)
    for layer, info in zip(image.layers, report["layers"], strict=True):
        assert info["kept"] == round(0.5 * info["weights"])
        assert np.count_nonzero(layer.weights()) <= info["kept"]
    # The model itself carries the image's weights: pruned ones are exactly zero.
    assert (model[0].weight == 0).sum().item() >= 36


def test_kmeans_inits():
    v = np.concatenate([np.linspace(-1, -0.5, 50), np.linspace(0.5, 1, 50), [3.0]])
    lin, _ = kmeans_1d(v, 3, iters=0, init="linear")
    assert np.allclose(lin, [-1, 1, 3])
    dens, _ = kmeans_1d(v, 3, iters=0, init="density")
    assert np.allclose(dens, np.quantile(v, [0, 0.5, 1]))
    rnd, _ = kmeans_1d(v, 3, iters=0, init="random", seed=1)
    assert set(rnd) <= set(v)
    with pytest.raises(ValueError):
        kmeans_1d(v, 3, init="nope")


def test_sensitivity_curves_and_tolerance():
    from weights.prune import SensitivityCurve, keep_for_tolerance, quality_for_keep, sensitivity

    x, y = synthetic_data(128)
    model = trained_small_net(x, y)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    curves = sensitivity(model, {"conv1": model[0], "fc2": model[8]}, x, y,
                         keeps=(1.0, 0.5, 0.05))
    assert [c.layer for c in curves] == ["conv1", "fc2"]
    for c in curves:
        assert c.error_pct[0] == c.base_error_pct  # keep 100 % = the unpruned model
        assert c.error_pct[-1] >= c.base_error_pct
    for n, p in model.named_parameters():  # the model is restored afterwards
        assert torch.equal(p, before[n])
    curve = SensitivityCurve("l", (1.0, 0.5, 0.2, 0.1), (1.0, 1.1, 1.6, 5.0), 1.0)
    assert keep_for_tolerance(curve, 0.5) == 0.5
    assert keep_for_tolerance(curve, 0.6) == 0.2
    assert keep_for_tolerance(curve, 0.01) == 1.0
    w = np.array([0.1, -0.4, 0.2, 0.8])
    q = quality_for_keep(w, 0.5)
    assert q == pytest.approx(0.4 / np.std(w))
    assert np.count_nonzero(np.abs(w) >= q * np.std(w)) == 2
