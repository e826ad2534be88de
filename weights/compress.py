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

__all__ = [
    "CompressConfig",
    "LayerPlan",
    "ModelError",
    "UnitSpec",
    "compress",
    "extract_units",
    "kmeans_1d",
    "prune_masks",
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


@dataclass(frozen=True, kw_only=True)
class CompressConfig:
    """The whole pipeline's settings; ``plans`` has one LayerPlan per conv/fc layer."""

    plans: tuple[LayerPlan, ...]
    bw: int = 8
    retrain_epochs: int = 2
    retrain_lr: float = 0.002
    batch_size: int = 64
    kmeans_iters: int = 50
    max_code_len: int = MAX_CODE_LENGTH
    calib_size: int = 2000
    seed: int = 0

    def __post_init__(self):
        if self.bw not in BIT_WIDTHS:
            raise ValueError(f"bw must be one of {BIT_WIDTHS}, not {self.bw}")
        if not 1 <= self.max_code_len <= MAX_CODE_LENGTH:
            raise ValueError(f"max_code_len must be 1..{MAX_CODE_LENGTH}")
        if self.retrain_epochs < 0 or self.calib_size < 1:
            raise ValueError("retrain_epochs must be >= 0 and calib_size >= 1")


@dataclass(frozen=True)
class UnitSpec:
    """One accelerator layer found in a model: the conv/fc module and what follows it."""

    name: str
    module: nn.Module
    kind: Kind
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
                raise ModelError(f"layer {name!r}: padding mode {m.padding_mode!r} is not supported")
            if len(shape) != 3 or shape[0] != m.in_channels:
                raise ModelError(f"layer {name!r}: expects {m.in_channels} input channels, "
                                 f"gets shape {shape}")
            oh = (shape[1] + 2 * p - k) // s + 1
            ow = (shape[2] + 2 * p - k) // s + 1
            if oh < 1 or ow < 1:
                raise ModelError(f"layer {name!r}: kernel {k} does not fit input {shape}")
            cur = dict(name=name, module=m, kind=Kind.CONV, relu=False, pool=0, pool_stride=0,
                       in_shape=shape, out_shape=(m.out_channels, oh, ow))
            shape = cur["out_shape"]
        elif isinstance(m, nn.Linear):
            close()
            features = int(np.prod(shape))
            if len(shape) == 3 and shape[1:] != (1, 1):
                raise ModelError(f"layer {name!r}: Linear after a feature map needs a Flatten")
            if m.in_features != features:
                raise ModelError(f"layer {name!r}: expects {m.in_features} inputs, gets {features}")
            cur = dict(name=name, module=m, kind=Kind.FC, relu=False, pool=0, pool_stride=0,
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


def prune_masks(weights: dict[str, np.ndarray], keep: dict[str, float]) -> dict[str, np.ndarray]:
    """Magnitude pruning: keep the ``round(keep * size)`` largest |w| of each tensor (>= 1).

    Ties are broken by position (the earlier weight is kept), so masks are deterministic.
    """
    out = {}
    for name, w in weights.items():
        flat = np.abs(np.asarray(w, dtype=np.float64)).ravel()
        k = max(1, int(round(keep[name] * flat.size)))
        order = np.lexsort((np.arange(flat.size), -flat))
        mask = np.zeros(flat.size, dtype=bool)
        mask[order[:k]] = True
        out[name] = mask.reshape(np.shape(w))
    return out


def kmeans_1d(values: np.ndarray, k: int, iters: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means on a 1-D array with linear initialisation: (centroids, assignment).

    Centroids start evenly spaced over [min, max] (Deep Compression found linear
    initialisation best: it keeps centroids on the rare large weights). An empty cluster
    keeps its previous centroid. Assignment is to the nearest centroid, ties to the lower.
    """
    v = np.asarray(values, dtype=np.float64)
    lo, hi = float(v.min()), float(v.max())
    c = np.linspace(lo, hi, k) if k > 1 else np.array([v.mean()])
    assign = np.zeros(len(v), dtype=np.int64)
    for _ in range(iters):
        assign = _nearest(v, c)
        sums = np.bincount(assign, weights=v, minlength=k)
        counts = np.bincount(assign, minlength=k)
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


def _best_fl(values: np.ndarray, bits: int, weights: np.ndarray | None = None) -> int:
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
    handles = []
    for m in order:
        if id(m) in owner:
            def hook(mod, inp, out, i=owner[id(m)]):
                outs[i] = out.detach().double().numpy()
            handles.append(m.register_forward_hook(hook))
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
    from weights.train import Recipe, train  # the torch training loop

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

    # 1. Magnitude pruning, then retraining with the masks held.
    weights = {u.name: u.module.weight.detach().double().numpy() for u in units}
    masks = prune_masks(weights, {u.name: p.keep for u, p in zip(units, config.plans, strict=True)})
    with torch.no_grad():
        for u in units:
            u.module.weight.mul_(torch.from_numpy(masks[u.name]).to(u.module.weight.dtype))
    if config.retrain_epochs:
        tx, ty = _to_numpy(train_data, "training data", keep_uint8=True)
        say(f"retraining the pruned model for {config.retrain_epochs} epochs")
        param_name = {id(m): f"{n}.weight" if n else "weight" for n, m in model.named_modules()}
        recipe = Recipe(epochs=config.retrain_epochs, batch_size=config.batch_size,
                        lr=config.retrain_lr, schedule="cosine")

        def epoch_progress(epoch, epochs, batch, batches, loss):
            if batch == batches:
                say(f"retrain epoch {epoch}/{epochs}: loss {loss:.4f}")

        train(model, tx, ty, recipe, seed=config.seed, progress=epoch_progress,
              masks={param_name[id(u.module)]: torch.from_numpy(masks[u.name].astype(np.float32))
                     for u in units})
        model.eval()

    # 2. Weight sharing: k-means over each layer's kept weights; 3. weights' fl.
    shared = []
    for u, plan in zip(units, config.plans, strict=True):
        w = u.module.weight.detach().double().numpy().reshape(u.out_shape[0], -1)
        mask = masks[u.name].reshape(w.shape)
        kept = w[mask]
        cents, assign = kmeans_1d(kept, 1 << plan.weight_bits, config.kmeans_iters)
        counts = np.bincount(assign, minlength=len(cents)).astype(np.float64)
        w_fl = _best_fl(cents, config.bw, counts)
        codebook = quantize(cents, w_fl, config.bw)
        idx = np.full(w.shape, -1, dtype=np.int64)
        idx[mask] = assign
        shared.append(dict(idx=idx, codebook=codebook, w_fl=w_fl, cents=cents))
        # The float model now carries the shared, quantized weights (used for calibration).
        with torch.no_grad():
            deq = np.zeros(w.shape)
            deq[mask] = codebook[assign] * 2.0 ** -w_fl
            u.module.weight.copy_(torch.from_numpy(deq.reshape(u.module.weight.shape)))
        say(f"{u.name}: kept {int(mask.sum())}/{mask.size} weights, "
            f"{len(cents)} centroids, weight fl {w_fl}")

    # 4. Activations' fl, greedily layer by layer against the float model.
    ref = _float_outputs(units, model, cx)
    input_fl = _best_fl(cx.astype(np.float64).ravel(), config.bw)
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
        best = None
        for out_fl in _fl_candidates(ref[i], config.bw):
            b_fl = min(acc_fl, out_fl + BIAS_GUARD_BITS)
            y = postprocess(acc, quantize(b, b_fl, 32), acc_fl=acc_fl, b_fl=b_fl,
                            out_fl=out_fl, bw=config.bw, use_relu=u.relu, pool=u.pool,
                            pool_stride=u.pool_stride)
            err = float(np.sum((y * 2.0 ** -out_fl - ref[i]) ** 2))
            if best is None or err <= best[0]:
                best = (err, out_fl, b_fl, y)
        _, out_fl, b_fl, y = best
        bias_q = quantize(b, b_fl, 32)
        bias_bits = _signed_bits(bias_q)
        fls.append(dict(out_fl=out_fl, b_fl=b_fl, bias=bias_q, bias_bits=bias_bits))
        x, in_fl = y, out_fl
        say(f"{u.name}: output fl {out_fl}, bias fl {b_fl} in {bias_bits} bits")

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
    data = write_image(image)
    report = dict(seconds=time.perf_counter() - t0, bytes=len(data),
                  config=dataclasses.asdict(config))
    return image, data, report


def _signed_bits(v: np.ndarray) -> int:
    """The fewest two's-complement bits that hold every value of ``v`` (at least 1)."""
    bits = 1
    lo, hi = int(np.min(v)), int(np.max(v))
    while not (int_range(bits)[0] <= lo and hi <= int_range(bits)[1]):
        bits += 1
    if bits > 32:
        raise ModelError("a bias does not fit 32 bits at its fractional length")
    return bits
