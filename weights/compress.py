"""From a trained PyTorch model to a weight image: prune, share, quantize, Huffman-code.

``compress(model, train, calib, config)`` is the bring-your-own-model API; the command line's
``espalier compress`` calls it with MNIST and the shipped LeNets.

Ref: Han et al., NIPS 2015 (magnitude pruning with retraining); Han, Mao, Dally, ICLR 2016
(per-layer k-means weight sharing with linear initialisation, Huffman coding); Qiu et al.,
FPGA 2016 section 5 (per-layer fractional lengths: weights by minimal quantization error,
activations greedily layer by layer against float results on calibration data).
"""

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from golden.fixedpoint import BIT_WIDTHS, accumulate, int_range, quantize
from golden.model import conv_accumulate, postprocess
from weights.huffman import MAX_CODE_LENGTH
from weights.image import Activation, Image, Kind, Layer, encode_streams, write_image
from weights.order import order_channels
from weights.prune import magnitude_mask
from weights.train import Recipe, train

__all__ = [
    "CompressConfig",
    "LayerPlan",
    "ModelError",
    "UnitSpec",
    "choose_activation_fl",
    "choose_fl",
    "compress",
    "extract_units",
    "kmeans_1d",
]

#: Extra fractional bits a bias keeps beyond its layer's output (then rounded away).
BIAS_GUARD_BITS = 4
#: Fractional lengths searched beyond the largest one that cannot saturate.
FL_EXTRA = 6


def _fl_candidates(values: np.ndarray, bits: int) -> range:
    """Fractional lengths to try: from the largest that holds max|values| unsaturated, up."""
    peak = float(np.max(np.abs(values))) if np.size(values) else 0.0
    if peak == 0.0:
        return range(bits - 1, bits)
    fl0 = bits - 1 - int(np.ceil(np.log2(peak)))
    return range(fl0 - 1, fl0 + FL_EXTRA + 1)


class ModelError(ValueError):
    """A model the accelerator cannot run; the message names the layer."""


@dataclass(frozen=True, kw_only=True)
class LayerPlan:
    """How to compress one conv/fc layer: fraction of weights kept, codebook and run bits."""

    keep: float = 1.0
    weight_bits: int = 5
    run_bits: int = 4

    def __post_init__(self):
        if not 0.0 < self.keep <= 1.0:
            raise ValueError(f"keep must be in (0, 1], not {self.keep}")
        if not 1 <= self.weight_bits <= 8:
            raise ValueError(f"weight_bits must be 1..8, not {self.weight_bits}")
        if not 0 <= self.run_bits <= 8:
            raise ValueError(f"run_bits must be 0..8, not {self.run_bits}")


KMEANS_INITS = ("linear", "density", "random")


@dataclass(frozen=True, kw_only=True)
class CompressConfig:
    """The whole pipeline's settings; ``plans`` has one LayerPlan per conv/fc layer.

    Pruning runs ``prune_rounds`` rounds; round ``r`` keeps ``keep ** (r / prune_rounds)`` of
    each layer (the largest magnitudes among the previous round's survivors), then retrains
    ``retrain_epochs`` epochs with the masks held. Weight sharing clusters each layer's kept
    weights (``kmeans_init``), then fine-tunes the centroids ``finetune_epochs`` epochs.
    ``longest_first`` stores each hidden layer's channels longest first (``weights.order``:
    the same network, dealt better to the accelerator's decode lanes).
    """

    plans: tuple[LayerPlan, ...]
    bw: int = 8
    prune_rounds: int = 1
    retrain_epochs: int = 2
    retrain_lr: float = 0.01
    finetune_epochs: int = 0
    finetune_lr: float = 0.001
    kmeans_init: str = "linear"
    batch_size: int = 64
    kmeans_iters: int = 50
    max_code_len: int = MAX_CODE_LENGTH
    calib_size: int = 2000
    longest_first: bool = True
    seed: int = 0

    def __post_init__(self):
        if self.bw not in BIT_WIDTHS:
            raise ValueError(f"bw must be one of {BIT_WIDTHS}, not {self.bw}")
        if not 1 <= self.max_code_len <= MAX_CODE_LENGTH:
            raise ValueError(f"max_code_len must be 1..{MAX_CODE_LENGTH}")
        if self.prune_rounds < 1:
            raise ValueError("prune_rounds must be at least 1")
        if self.retrain_epochs < 0 or self.finetune_epochs < 0 or self.calib_size < 1:
            raise ValueError("epochs must be >= 0 and calib_size >= 1")
        if self.kmeans_init not in KMEANS_INITS:
            raise ValueError(f"kmeans_init must be one of {KMEANS_INITS}, "
                             f"not {self.kmeans_init!r}")


@dataclass(frozen=True)
class UnitSpec:
    """One accelerator layer found in a model: the conv/fc module and what follows it."""

    name: str
    module: nn.Module
    kind: Kind
    label: str  # conv1, conv2, fc1, ...: the names `espalier inspect` gives the image's layers
    relu: bool
    pool: int
    pool_stride: int
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]


def _leaves(model: nn.Module):
    for name, m in model.named_modules():
        if not list(m.children()):
            yield name or type(m).__name__, m


def _pair(v, what, name):
    if isinstance(v, tuple):
        if len(set(v)) != 1:
            raise ModelError(f"layer {name!r}: non-square {what} {v} is not supported")
        return v[0]
    return v


def extract_units(model: nn.Module, input_shape: tuple[int, int, int]) -> list[UnitSpec]:
    """Map a model onto the accelerator's layers, refusing what it cannot run up front.

    Allowed, in order: Conv2d or Linear, then optionally ReLU and MaxPool2d (in either order:
    they commute); Flatten between a convolution and a Linear layer; Dropout (a no-op at
    inference). Everything else is refused with a message naming the layer.
    """
    units = []
    shape = tuple(input_shape)
    cur = None

    def close():
        nonlocal cur
        if cur is not None:
            units.append(UnitSpec(**cur))
            cur = None

    for name, m in _leaves(model):
        if isinstance(m, nn.Conv2d):
            close()
            k = _pair(m.kernel_size, "kernel", name)
            s = _pair(m.stride, "stride", name)
            if isinstance(m.padding, str):
                raise ModelError(f"layer {name!r}: padding={m.padding!r} is not supported; "
                                 "give it as a number")
            p = _pair(m.padding, "padding", name)
            if m.groups != 1 or _pair(m.dilation, "dilation", name) != 1:
                raise ModelError(f"layer {name!r}: grouped or dilated convolution is not supported")
            if m.padding_mode != "zeros":
                raise ModelError(f"layer {name!r}: padding mode {m.padding_mode!r} "
                                 "is not supported")
            if len(shape) != 3 or shape[0] != m.in_channels:
                raise ModelError(f"layer {name!r}: expects {m.in_channels} input channels, "
                                 f"gets shape {shape}")
            oh = (shape[1] + 2 * p - k) // s + 1
            ow = (shape[2] + 2 * p - k) // s + 1
            if oh < 1 or ow < 1:
                raise ModelError(f"layer {name!r}: kernel {k} does not fit input {shape}")
            cur = dict(name=name, label="", module=m, kind=Kind.CONV, relu=False, pool=0,
                       pool_stride=0,
                       in_shape=shape, out_shape=(m.out_channels, oh, ow))
            shape = cur["out_shape"]
        elif isinstance(m, nn.Linear):
            close()
            features = int(np.prod(shape))
            if len(shape) == 3 and shape[1:] != (1, 1):
                raise ModelError(f"layer {name!r}: Linear after a feature map needs a Flatten")
            if m.in_features != features:
                raise ModelError(f"layer {name!r}: expects {m.in_features} inputs, gets {features}")
            cur = dict(name=name, label="", module=m, kind=Kind.FC, relu=False, pool=0,
                       pool_stride=0,
                       in_shape=(features, 1, 1), out_shape=(m.out_features, 1, 1))
            shape = (m.out_features,)
        elif isinstance(m, nn.ReLU):
            if cur is None:
                raise ModelError(f"layer {name!r}: ReLU must follow a Conv2d or Linear layer")
            cur["relu"] = True
        elif isinstance(m, nn.MaxPool2d):
            if cur is None or cur["kind"] != Kind.CONV or cur["pool"]:
                raise ModelError(f"layer {name!r}: MaxPool2d must follow one Conv2d layer")
            k = _pair(m.kernel_size, "kernel", name)
            s = _pair(m.stride if m.stride is not None else m.kernel_size, "stride", name)
            if _pair(m.padding, "padding", name) or _pair(m.dilation, "dilation", name) != 1 \
                    or m.ceil_mode:
                raise ModelError(f"layer {name!r}: MaxPool2d needs padding 0, dilation 1, "
                                 "ceil_mode False")
            c, h, w = shape
            if k > min(h, w):
                raise ModelError(f"layer {name!r}: a {k}x{k} pool does not fit {h}x{w}")
            cur["pool"], cur["pool_stride"] = k, s
            shape = (c, (h - k) // s + 1, (w - k) // s + 1)
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise ModelError(f"layer {name!r}: only Flatten(start_dim=1) is supported")
            shape = (int(np.prod(shape)),) if len(shape) == 3 else shape
        elif isinstance(m, nn.Dropout | nn.Identity):
            pass
        else:
            raise ModelError(f"layer {name!r}: {type(m).__name__} is not a layer kind the "
                             "accelerator runs (Conv2d, Linear, ReLU, MaxPool2d, Flatten)")
    close()
    if not units:
        raise ModelError("the model has no Conv2d or Linear layer")
    counts = {Kind.CONV: 0, Kind.FC: 0}
    for i, u in enumerate(units):
        counts[u.kind] += 1
        prefix = "conv" if u.kind == Kind.CONV else "fc"
        units[i] = dataclasses.replace(u, label=f"{prefix}{counts[u.kind]}")
    for u in units:
        for v in (*u.in_shape, *u.out_shape):
            if v > 0xFFFF:
                raise ModelError(f"layer {u.name!r}: a dimension of {v} exceeds 65,535")
        if u.kind == Kind.CONV:
            m = u.module
            if max(*_as2(m.kernel_size), *_as2(m.stride), *_as2(m.padding)) > 255:
                raise ModelError(f"layer {u.name!r}: kernel, stride or padding above 255")
    return units


def _as2(v):
    return v if isinstance(v, tuple) else (v, v)


# ---------------------------------------------------------------------------------------
# Pruning and weight sharing


def kmeans_1d(values: np.ndarray, k: int, iters: int = 50, init: str = "linear",
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means on a 1-D array: (centroids, assignment to the nearest centroid).

    ``init``: ``linear`` spaces the centroids evenly over [min, max] (Deep Compression found
    it best: it keeps centroids on the rare large weights); ``density`` puts them at evenly
    spaced quantiles of the weights' distribution; ``random`` picks ``k`` distinct weights
    (seeded). An empty cluster keeps its previous centroid; ties go to the lower centroid.
    Ref: Deep Compression (ICLR 2016) section 3.2, Figure 4.
    """
    v = np.asarray(values, dtype=np.float64)
    k = min(k, len(v)) if init == "random" else k
    if k == 1:
        c = np.array([v.mean()])
    elif init == "linear":
        c = np.linspace(v.min(), v.max(), k)
    elif init == "density":
        c = np.quantile(v, np.linspace(0.0, 1.0, k))
    elif init == "random":
        c = np.sort(np.random.default_rng(seed).choice(v, size=k, replace=False))
    else:
        raise ValueError(f"unknown k-means initialisation {init!r}")
    for _ in range(iters):
        assign = _nearest(v, c)
        sums = np.bincount(assign, weights=v, minlength=len(c))
        counts = np.bincount(assign, minlength=len(c))
        new = np.where(counts > 0, sums / np.maximum(counts, 1), c)
        if np.array_equal(new, c):
            break
        c = new
    return c, _nearest(v, c)


def _nearest(v: np.ndarray, c: np.ndarray) -> np.ndarray:
    order = np.argsort(c, kind="stable")
    cs = c[order]
    if len(cs) == 1:
        return np.zeros(len(v), dtype=np.int64)
    mids = (cs[1:] + cs[:-1]) / 2
    return order[np.searchsorted(mids, v, side="left")]


def choose_fl(values: np.ndarray, bits: int, weights: np.ndarray | None = None) -> int:
    """The fractional length whose ``bits``-bit quantization of ``values`` errs least.

    Error is the (weighted) sum of squares; ties go to the larger fl.
    """
    best, best_err = None, None
    for fl in _fl_candidates(values, bits):
        q = quantize(values, fl, bits).astype(np.float64) * 2.0 ** -fl
        err = (q - values) ** 2
        err = float(np.sum(err * weights) if weights is not None else np.sum(err))
        if best_err is None or err <= best_err:
            best, best_err = fl, err
    return best


# ---------------------------------------------------------------------------------------
# The pipeline


def choose_activation_fl(acc: np.ndarray, bias: np.ndarray, acc_fl: int, ref: np.ndarray,
                         bw: int, *, use_relu: bool, pool: int = 0, pool_stride: int = 0):
    """A layer's output fractional length, greedily (Qiu et al. 2016, section 5).

    ``acc`` holds the layer's exact integer accumulators on the calibration inputs (whose
    earlier layers already run in fixed point), ``ref`` the float model's output of the same
    layer. Every candidate ``out_fl`` is run through the golden post-processing (bias stored
    at ``b_fl = min(acc_fl, out_fl + BIAS_GUARD_BITS)``); the one with the least squared error
    against ``ref`` wins, ties to the larger fl. Returns ``(out_fl, b_fl, bias ints, output)``.
    """
    best = None
    for out_fl in _fl_candidates(ref, bw):
        b_fl = min(acc_fl, out_fl + BIAS_GUARD_BITS)
        bias_q = quantize(bias, b_fl, 33)
        if np.any(np.abs(bias_q) >= 1 << 31):
            raise ModelError(f"a bias of {float(np.max(np.abs(bias)))} does not fit 32 bits "
                             f"at fractional length {b_fl}")
        y = postprocess(acc, bias_q, acc_fl=acc_fl, b_fl=b_fl, out_fl=out_fl, bw=bw,
                        use_relu=use_relu, pool=pool, pool_stride=pool_stride)
        err = float(np.sum((y * 2.0 ** -out_fl - ref) ** 2))
        if best is None or err <= best[0]:
            best = (err, out_fl, b_fl, bias_q, y)
    return best[1:]


def _to_numpy(data, what: str, keep_uint8: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, labels int64) from arrays or a torch Dataset.

    Inputs become float32 (uint8 images scaled as ``weights.datasets.to_float``) unless
    ``keep_uint8``, which leaves uint8 MNIST-style images for the trainer's augmentation.
    """
    if isinstance(data, tuple) and len(data) == 2:
        x, y = data
    elif isinstance(data, torch.utils.data.Dataset):
        items = [data[i] for i in range(len(data))]
        x = np.stack([np.asarray(a) for a, _ in items])
        y = np.asarray([int(b) for _, b in items])
    else:
        raise TypeError(f"{what}: give (inputs, labels) arrays or a torch Dataset")
    x = np.asarray(x)
    if x.dtype == np.uint8 and keep_uint8:
        return x, np.asarray(y, dtype=np.int64)
    if x.dtype == np.uint8:
        from weights.datasets import to_float

        x = to_float(x)
    return x.astype(np.float32), np.asarray(y, dtype=np.int64)


def _float_outputs(units: list[UnitSpec], model: nn.Module, x: np.ndarray) -> list[np.ndarray]:
    """Each unit's float output (after its ReLU and pool) on inputs ``x``."""
    outs = {}
    # Every leaf from a unit's conv/fc module up to the next unit belongs to that unit; its
    # output is the last such leaf's (Flatten, Dropout and Identity change no values).
    starts = {id(u.module): i for i, u in enumerate(units)}
    order = [m for _, m in _leaves(model)]
    owner = {}
    unit_idx = -1
    for m in order:
        unit_idx = starts.get(id(m), unit_idx)
        if unit_idx >= 0 and not isinstance(m, nn.Flatten | nn.Dropout | nn.Identity):
            owner[id(m)] = unit_idx

    def recorder(i):
        def hook(mod, inp, out):
            outs[i] = out.detach().double().numpy()
        return hook

    handles = [m.register_forward_hook(recorder(owner[id(m)])) for m in order if id(m) in owner]
    try:
        with torch.no_grad():
            model.eval()
            model(torch.from_numpy(x))
    finally:
        for h in handles:
            h.remove()
    return [outs[i] for i in range(len(units))]


def compress(model: nn.Module, train_data, calib_data, config: CompressConfig,
             progress=None) -> tuple[Image, bytes, dict]:
    """Compress a trained model into a weight image: ``(image, image bytes, report)``.

    ``train_data`` is used to retrain after pruning (skipped when ``retrain_epochs`` is 0);
    ``calib_data`` (the first ``calib_size`` samples) chooses the activations' fractional
    lengths. Both are ``(inputs, labels)`` arrays (uint8 MNIST images are scaled as
    ``weights.datasets.to_float``) or a torch Dataset of ``(input, label)``. The model is
    modified in place (pruned, retrained, weights shared).
    """
    say = progress or (lambda msg: None)
    t0 = time.perf_counter()
    torch.set_num_threads(1)
    cx, _ = _to_numpy(calib_data, "calibration data")
    cx = cx[: config.calib_size]
    input_shape = tuple(cx.shape[1:])
    if len(input_shape) == 1:
        input_shape = (input_shape[0], 1, 1)
    units = extract_units(model, input_shape)
    if len(config.plans) != len(units):
        raise ValueError(f"{len(config.plans)} layer plans for {len(units)} conv/fc layers "
                         f"({', '.join(u.name for u in units)})")
    model.eval()

    # 1. Iterative magnitude pruning, retraining with the masks held after each round.
    # Ref: Han et al. 2015 section 3.3. The models here have no dropout to rescale.
    param_name = {id(m): f"{n}.weight" if n else "weight" for n, m in model.named_modules()}
    names = {u.name: param_name[id(u.module)] for u in units}
    tx = ty = None
    if config.retrain_epochs or config.finetune_epochs:
        tx, ty = _to_numpy(train_data, "training data", keep_uint8=True)
    before = {u.name: u.module.weight.detach().double().numpy().ravel().copy() for u in units}
    std0 = {n: float(np.std(w)) for n, w in before.items()}
    masks = {u.name: None for u in units}
    quality = {}
    for r in range(1, config.prune_rounds + 1):
        with torch.no_grad():
            for u, plan in zip(units, config.plans, strict=True):
                w = u.module.weight.detach().double().numpy()
                masks[u.name] = magnitude_mask(w, plan.keep ** (r / config.prune_rounds),
                                               masks[u.name])
                # The threshold this round applied, as Han et al.'s quality x the std of the
                # layer's trained (unpruned) weights.
                quality[u.name] = float(np.abs(w[masks[u.name]]).min() / std0[u.name])
                u.module.weight.mul_(torch.from_numpy(masks[u.name]).to(u.module.weight.dtype))
        if config.retrain_epochs:
            say(f"pruning round {r}/{config.prune_rounds}: kept "
                + ", ".join(f"{u.label} {masks[u.name].mean():.1%}" for u in units)
                + f"; retraining {config.retrain_epochs} epochs")
            recipe = Recipe(epochs=config.retrain_epochs, batch_size=config.batch_size,
                            lr=config.retrain_lr, schedule="cosine")
            train(model, tx, ty, recipe, seed=config.seed + r, progress=_epoch_progress(say),
                  masks={names[n]: torch.from_numpy(m.astype(np.float32))
                         for n, m in masks.items()})
    model.eval()

    # 2. Weight sharing: k-means over each layer's kept weights, then fine-tune the centroids.
    shared = {}
    after = {}
    for u, plan in zip(units, config.plans, strict=True):
        w = u.module.weight.detach().double().numpy()
        after[u.name] = w[masks[u.name]]
        cents, assign = kmeans_1d(w[masks[u.name]], 1 << plan.weight_bits, config.kmeans_iters,
                                  config.kmeans_init, config.seed)
        idx = np.full(w.shape, -1, dtype=np.int64)
        idx[masks[u.name]] = assign
        shared[u.name] = (torch.from_numpy(idx), torch.from_numpy(cents))
    if config.finetune_epochs:
        say(f"fine-tuning the shared centroids for {config.finetune_epochs} epochs")
        recipe = Recipe(epochs=config.finetune_epochs, batch_size=config.batch_size,
                        lr=config.finetune_lr, schedule="cosine")
        train(model, tx, ty, recipe, seed=config.seed + 1000, progress=_epoch_progress(say),
              shared={names[n]: v for n, v in shared.items()})
        model.eval()

    # 3. Weights' fractional length: the least quantization error of the layer's weights.
    shared_q = []
    for u in units:
        idx, cents = (t.numpy() for t in shared[u.name])
        idx = idx.reshape(u.out_shape[0], -1)
        counts = np.bincount(idx[idx >= 0], minlength=len(cents)).astype(np.float64)
        w_fl = choose_fl(cents, config.bw, counts)
        codebook = quantize(cents, w_fl, config.bw)
        shared_q.append(dict(idx=idx, codebook=codebook, w_fl=w_fl))
        # The float model now carries the quantized shared weights (the calibration reference).
        with torch.no_grad():
            deq = np.where(idx >= 0, codebook[np.maximum(idx, 0)] * 2.0 ** -w_fl, 0.0)
            u.module.weight.copy_(torch.from_numpy(deq.reshape(u.module.weight.shape)))
        say(f"{u.label}: kept {int((idx >= 0).sum())}/{idx.size} weights "
            f"(threshold {quality[u.name]:.3f} x std), {len(cents)} centroids, weight fl {w_fl}")
    shared = shared_q

    # 4. Activations' fl, greedily layer by layer against the float model.
    ref = _float_outputs(units, model, cx)
    input_fl = choose_fl(cx.astype(np.float64).ravel(), config.bw)
    x = quantize(cx, input_fl, config.bw)
    if x.ndim == 2:
        x = x.reshape(len(x), *input_shape)
    in_fl = input_fl
    fls = []
    for i, u in enumerate(units):
        s = shared[i]
        wq = np.where(s["idx"] >= 0, s["codebook"][np.maximum(s["idx"], 0)], 0)
        acc_fl = in_fl + s["w_fl"]
        b = u.module.bias.detach().double().numpy() if u.module.bias is not None \
            else np.zeros(u.out_shape[0])
        if u.kind == Kind.CONV:
            m = u.module
            acc = conv_accumulate(x, wq, _as2(m.kernel_size), _as2(m.stride)[0],
                                  _as2(m.padding)[0], config.bw)
        else:
            acc = accumulate(x.reshape(len(x), -1), wq, config.bw)
        out_fl, b_fl, bias_q, y = choose_activation_fl(
            acc, b, acc_fl, ref[i], config.bw, use_relu=u.relu, pool=u.pool,
            pool_stride=u.pool_stride)
        bias_bits = _signed_bits(bias_q)
        fls.append(dict(out_fl=out_fl, b_fl=b_fl, bias=bias_q, bias_bits=bias_bits))
        x, in_fl = y, out_fl
        say(f"{u.label}: output fl {out_fl}, bias fl {b_fl} in {bias_bits} bits")

    # 5. Huffman coding and the image.
    layers = []
    for u, plan, s, f in zip(units, config.plans, shared, fls, strict=True):
        table, streams = encode_streams(s["idx"], len(s["codebook"]), plan.run_bits,
                                        config.max_code_len)
        m = u.module
        layers.append(Layer(
            kind=u.kind, activation=Activation.RELU if u.relu else Activation.NONE,
            in_shape=u.in_shape, out_shape=u.out_shape,
            kernel=_as2(m.kernel_size) if u.kind == Kind.CONV else (1, 1),
            stride=_as2(m.stride)[0] if u.kind == Kind.CONV else 1,
            padding=_as2(m.padding)[0] if u.kind == Kind.CONV else 0,
            pool=u.pool, pool_stride=u.pool_stride, w_fl=s["w_fl"], b_fl=f["b_fl"],
            out_fl=f["out_fl"], index_bits=plan.weight_bits, run_bits=plan.run_bits,
            bias_bits=f["bias_bits"], codebook=s["codebook"], table=table, bias=f["bias"],
            streams=streams))
    image = Image(bw=config.bw, input_fl=input_fl, input_shape=input_shape,
                  layers=tuple(layers))
    # 6. Hidden channels stored longest first, for the decode lanes' deal (weights/order.py).
    if config.longest_first:
        image = order_channels(image, config.max_code_len)
    data = write_image(image)
    report = dict(seconds=time.perf_counter() - t0, bytes=len(data),
                  config=dataclasses.asdict(config),
                  layers=[dict(name=u.label, module=u.name, kept=int((s["idx"] >= 0).sum()),
                               weights=int(s["idx"].size), quality=quality[u.name])
                          for u, s in zip(units, shared, strict=True)],
                  # For plots; not JSON: float weights before pruning, kept weights before
                  # sharing, and the real values of the codebooks.
                  arrays=[dict(name=u.label, before=before[u.name], after=after[u.name],
                               centroids=s["codebook"] * 2.0 ** -s["w_fl"])
                          for u, s in zip(units, shared, strict=True)])
    return image, data, report


def _epoch_progress(say):
    def progress(epoch, epochs, batch, batches, loss):
        if batch == batches:
            say(f"  epoch {epoch}/{epochs}: training loss {loss:.4f}")
    return progress


def _signed_bits(v: np.ndarray) -> int:
    """The fewest two's-complement bits that hold every value of ``v`` (at least 1)."""
    bits = 1
    lo, hi = int(np.min(v)), int(np.max(v))
    while not (int_range(bits)[0] <= lo and hi <= int_range(bits)[1]):
        bits += 1
    if bits > 32:
        raise ModelError("a bias does not fit 32 bits at its fractional length")
    return bits
