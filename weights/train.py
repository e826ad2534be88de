"""Deterministic float training of the MNIST models, their evaluation and their checkpoints.

Everything runs on one CPU thread with deterministic algorithms, and all randomness comes from
the seed: ``torch.manual_seed(seed)`` for the initial weights and a ``numpy`` Generator for
the shuffling order and the augmentation shifts. The same seed, recipe and torch build give
the same weights, bit for bit.

The compression pipeline reuses :func:`train` with ``masks`` to retrain a pruned network:
pruned weights receive no gradient and are re-zeroed after every step, so they stay exactly 0.

Ref: Han, Pool, Tran, Dally, "Learning both Weights and Connections for Efficient Neural
Networks", NIPS 2015, section 4.1 and table 1 (the float baselines: LeNet-300-100 1.64 % and
LeNet-5 0.80 % top-1 error) and section 3 (train, prune, then retrain the remaining
connections).
"""

import dataclasses
import io
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from weights.datasets import load_mnist, to_float
from weights.models import MODELS, build_model

__all__ = [
    "PROGRESS_EVERY",
    "RECIPES",
    "Progress",
    "Recipe",
    "evaluate",
    "load_checkpoint",
    "save_checkpoint",
    "train",
    "train_model",
]

#: ``progress`` is called after every this many batches, and at the end of each epoch.
PROGRESS_EVERY = 50

#: ``progress(epoch, epochs, batch, batches, loss)``: 1-based epoch, batches done in this
#: epoch, and the mean training loss over the batches since the previous call.
Progress = Callable[[int, int, int, int, float], None]

_SCHEDULES = ("cosine", "step")
_CHECKPOINT_KEYS = {"model", "state_dict", "info"}


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """Hyperparameters of one training run: SGD with momentum and an lr schedule.

    ``schedule`` is ``"cosine"`` (the lr falls from ``lr`` to 0 along a half cosine, updated
    every batch) or ``"step"`` (the lr is multiplied by ``gamma`` every ``step_epochs``
    epochs). ``max_shift`` is the augmentation: each training image is moved by a random
    whole number of pixels in ``[-max_shift, max_shift]`` along each axis, zeros filling in;
    0 turns augmentation off.
    """

    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    step_epochs: int = 1
    gamma: float = 1.0
    max_shift: int = 0

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"a recipe needs at least one epoch, not {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"the batch size must be at least 1, not {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"the learning rate must be positive, not {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"the momentum must be in [0, 1), not {self.momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"the weight decay must not be negative, not {self.weight_decay}")
        if self.schedule not in _SCHEDULES:
            raise ValueError(
                f"unknown lr schedule {self.schedule!r}; use one of {', '.join(_SCHEDULES)}"
            )
        if self.step_epochs < 1:
            raise ValueError(f"step_epochs must be at least 1, not {self.step_epochs}")
        if not 0 <= self.max_shift < 28:
            raise ValueError(f"max_shift must be in 0..27 pixels, not {self.max_shift}")

    def lr_at(self, epoch: int, batch: int, batches: int) -> float:
        """The learning rate of 0-based ``batch`` of 0-based ``epoch``."""
        if self.schedule == "cosine":
            progress = (epoch * batches + batch) / (self.epochs * batches)
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.lr * self.gamma ** (epoch // self.step_epochs)


RECIPES: dict[str, Recipe] = {
    "lenet300": Recipe(epochs=30, batch_size=64, lr=0.05, weight_decay=1e-4, max_shift=2),
    "lenet5": Recipe(epochs=15, batch_size=64, lr=0.05, weight_decay=5e-4, max_shift=2),
}


def _shift(images: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Move each image by its own random (dy, dx) in [-max_shift, max_shift], zero fill."""
    n, h, w = images.shape
    padded = np.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift)))
    dy, dx = rng.integers(0, 2 * max_shift + 1, size=(2, n))
    rows = dy[:, None] + np.arange(h)
    cols = dx[:, None] + np.arange(w)
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def _is_images(batch: np.ndarray) -> bool:
    return batch.dtype == np.uint8 and batch.ndim == 3


def _inputs(batch: np.ndarray) -> np.ndarray:
    """Model inputs: uint8 (N, H, W) images are scaled with ``to_float``; any other array (a
    user's own data) is used as float32."""
    return to_float(batch) if _is_images(batch) else np.asarray(batch, dtype=np.float32)


def _batch_inputs(batch: np.ndarray, recipe: Recipe, rng: np.random.Generator) -> np.ndarray:
    """Training inputs for one batch: uint8 images are shifted first when the recipe says so."""
    if recipe.max_shift and _is_images(batch):
        batch = _shift(batch, recipe.max_shift, rng)
    return _inputs(batch)


def _check_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> dict:
    params = dict(model.named_parameters())
    checked = {}
    for name, mask in masks.items():
        if name not in params:
            raise ValueError(
                f"mask for unknown parameter {name!r}; the model has {', '.join(params)}"
            )
        if tuple(mask.shape) != tuple(params[name].shape):
            raise ValueError(
                f"mask for {name!r} has shape {tuple(mask.shape)}, "
                f"the parameter {tuple(params[name].shape)}"
            )
        checked[params[name]] = mask.to(dtype=params[name].dtype)
    return checked


def _check_shared(model: nn.Module, shared: Mapping[str, tuple]) -> dict:
    params = dict(model.named_parameters())
    checked = {}
    for name, (assign, centroids) in shared.items():
        if name not in params:
            raise ValueError(f"shared weights for unknown parameter {name!r}")
        if tuple(assign.shape) != tuple(params[name].shape):
            raise ValueError(f"the assignment of {name!r} does not have the parameter's shape")
        if int(assign.max()) >= len(centroids):
            raise ValueError(
                f"an assignment of {name!r} points past its {len(centroids)} centroids")
        checked[params[name]] = (assign.long(), centroids)
    return checked


def _expand_shared(assign: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """``centroids[assign]`` with 0 where ``assign`` is -1."""
    return torch.where(assign >= 0, centroids[assign.clamp(min=0)], torch.zeros(()))


def train(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    recipe: Recipe,
    *,
    seed: int,
    progress: Progress | None = None,
    masks: Mapping[str, torch.Tensor] | None = None,
    shared: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> None:
    """Train ``model`` in place on ``images`` and ``labels`` (N,).

    ``images`` are uint8 MNIST-style images (N, H, W), scaled by ``to_float`` (and shifted
    when the recipe asks for it), or float inputs of any shape, used as they are.

    ``masks`` maps parameter names (as in ``model.named_parameters()``) to 0/1 tensors of the
    parameter's shape: masked entries get no gradient, and are multiplied by 0 after every
    step (weight decay and momentum cannot move them either), so they stay exactly 0.

    ``shared`` maps parameter names to ``(assign, centroids)``: the parameter is
    ``centroids[assign]`` (0 where ``assign`` is -1, a pruned weight) and only the centroids
    train. Ref: Deep Compression (ICLR 2016) section 3.3: a centroid's gradient is the sum of
    the gradients of the weights that share it; the assignments stay fixed. The centroids
    (float64 tensors, updated in place) get the recipe's SGD without weight decay.
    """
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    rng = np.random.Generator(np.random.PCG64(seed))
    images = np.asarray(images)
    labels = np.asarray(labels)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    mask_of = _check_masks(model, masks or {})
    targets = torch.from_numpy(labels.astype(np.int64))

    share_of = _check_shared(model, shared or {})
    groups = [{"params": [p for p in model.parameters() if p not in share_of]}]
    if share_of:
        groups.append({"params": [c for _, c in share_of.values()], "weight_decay": 0.0})
    optimizer = torch.optim.SGD(
        groups,
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
        weight_decay=recipe.weight_decay,
    )
    loss_fn = nn.CrossEntropyLoss()
    with torch.no_grad():
        for param, mask in mask_of.items():
            param.mul_(mask)
        for param, (assign, centroids) in share_of.items():
            param.copy_(_expand_shared(assign, centroids).to(param.dtype))

    batches = math.ceil(len(images) / recipe.batch_size)
    model.train()
    for epoch in range(recipe.epochs):
        order = rng.permutation(len(images))
        loss_sum, loss_count = 0.0, 0
        for batch in range(batches):
            index = order[batch * recipe.batch_size : (batch + 1) * recipe.batch_size]
            x = torch.from_numpy(_batch_inputs(images[index], recipe, rng))
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr_at(epoch, batch, batches)

            optimizer.zero_grad(set_to_none=False)
            model.zero_grad(set_to_none=False)  # shared weights are outside the optimizer
            loss = loss_fn(model(x), targets[index])
            loss.backward()
            with torch.no_grad():
                for param, mask in mask_of.items():
                    param.grad.mul_(mask)
                for param, (assign, centroids) in share_of.items():
                    kept = assign >= 0
                    centroids.grad = torch.zeros_like(centroids).index_add_(
                        0, assign[kept], param.grad[kept].to(centroids.dtype))
            optimizer.step()
            with torch.no_grad():
                for param, mask in mask_of.items():
                    param.mul_(mask)
                for param, (assign, centroids) in share_of.items():
                    param.copy_(_expand_shared(assign, centroids).to(param.dtype))

            loss_sum += loss.item()
            loss_count += 1
            done = batch + 1
            if progress is not None and (done % PROGRESS_EVERY == 0 or done == batches):
                progress(epoch + 1, recipe.epochs, done, batches, loss_sum / loss_count)
                loss_sum, loss_count = 0.0, 0


def evaluate(
    model: nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000
) -> float:
    """Top-1 error of ``model`` in percent (float forward, no augmentation).

    ``images`` are uint8 (N, H, W), scaled by ``to_float``, or float inputs used as they are.
    """
    torch.set_num_threads(1)
    labels = np.asarray(labels)
    was_training = model.training
    model.eval()
    wrong = 0
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                x = torch.from_numpy(_inputs(np.asarray(images[start : start + batch_size])))
                predicted = model(x).argmax(dim=1).numpy()
                wrong += int(np.count_nonzero(predicted != labels[start : start + batch_size]))
    finally:
        model.train(was_training)
    return 100.0 * wrong / len(labels)


def train_model(
    name: str,
    *,
    seed: int = 0,
    epochs: int | None = None,
    progress: Progress | None = None,
) -> tuple[nn.Module, dict]:
    """Train model ``name`` on the MNIST training set with ``RECIPES[name]``.

    ``epochs`` overrides the recipe's. Returns the trained model (in eval mode) and an
    ``info`` dict: model, seed, epochs, recipe, test_error_pct, train_seconds.
    """
    if name not in RECIPES:
        raise ValueError(f"unknown model {name!r}; known models are {', '.join(sorted(RECIPES))}")
    recipe = RECIPES[name]
    if epochs is not None:
        recipe = dataclasses.replace(recipe, epochs=epochs)
    torch.set_num_threads(1)
    torch.manual_seed(seed)  # the initial weights
    model = build_model(name)
    train_images, train_labels = load_mnist("train")
    start = time.perf_counter()
    train(model, train_images, train_labels, recipe, seed=seed, progress=progress)
    train_seconds = time.perf_counter() - start
    test_images, test_labels = load_mnist("test")
    model.eval()
    info = {
        "model": name,
        "seed": seed,
        "epochs": recipe.epochs,
        "recipe": dataclasses.asdict(recipe),
        "test_error_pct": evaluate(model, test_images, test_labels),
        "train_seconds": round(train_seconds, 1),
    }
    return model, info


def save_checkpoint(model: nn.Module, info: dict, path: str | os.PathLike) -> None:
    """Write ``model`` and ``info`` (whose ``"model"`` names the architecture) to ``path``.

    The file is one ``torch.save``'d dict of plain types and tensors, loadable with
    ``torch.load(weights_only=True)`` (so ``info`` must hold only str, int, float, bool, None,
    lists and dicts); it is written to a temporary file and renamed, so a crash never leaves
    half a checkpoint behind.
    """
    path = Path(path)
    name = info.get("model")
    if name not in MODELS:
        raise ValueError(f"info['model'] must be one of {', '.join(sorted(MODELS))}, not {name!r}")
    state_dict = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    expected = {k: tuple(v.shape) for k, v in build_model(name).state_dict().items()}
    if {k: tuple(v.shape) for k, v in state_dict.items()} != expected:
        raise ValueError(f"the model's parameters do not match the {name} architecture")
    payload = {"model": name, "state_dict": state_dict, "info": info}
    path.parent.mkdir(parents=True, exist_ok=True)
    # Saving to a buffer names the archive inside the zip "archive" whatever the file is
    # called, so the same weights and info always give the same bytes.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(buffer.getvalue())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """Read a checkpoint written by :func:`save_checkpoint`; the model is in eval mode.

    Raises ``FileNotFoundError`` if ``path`` does not exist and ``ValueError`` if it is not
    an Espalier checkpoint; both name the path.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: not an Espalier checkpoint ({exc})") from None
    if not (
        isinstance(payload, dict)
        and set(payload) == _CHECKPOINT_KEYS
        and isinstance(payload["state_dict"], dict)
        and isinstance(payload["info"], dict)
    ):
        raise ValueError(
            f"{path}: not an Espalier checkpoint (expected a dict with keys "
            f"{', '.join(sorted(_CHECKPOINT_KEYS))})"
        )
    name = payload["model"]
    if name not in MODELS:
        raise ValueError(f"{path}: checkpoint of unknown model {name!r}")
    model = build_model(name)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit the {name} architecture ({exc})") from None
    model.eval()
    return model, dict(payload["info"])
