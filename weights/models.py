"""The two MNIST networks of the Deep Compression papers, as plain ``nn.Sequential`` stacks.

Each model is made only of ``Conv2d``, ``Linear``, ``ReLU``, ``MaxPool2d`` and ``Flatten``, in
execution order, so the compiler can walk ``model`` (or ``model.children()``) and map every
module onto an accelerator layer. Input is float32 (N, 1, 28, 28) from
:func:`weights.datasets.to_float`; output is (N, 10) logits.

Ref: Han, Pool, Tran, Dally, "Learning both Weights and Connections for Efficient Neural
Networks", NIPS 2015, table 1 (LeNet-300-100: 267K weights; LeNet-5: 431K weights) and Han,
Mao, Dally, "Deep Compression", ICLR 2016, tables 2 and 3.
"""

from collections.abc import Callable

from torch import nn

__all__ = ["MODELS", "build_model", "lenet300", "lenet5"]


def lenet300() -> nn.Sequential:
    """LeNet-300-100: a 784-300-100-10 perceptron with ReLU; 266,610 parameters."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 300),
        nn.ReLU(),
        nn.Linear(300, 100),
        nn.ReLU(),
        nn.Linear(100, 10),
    )


def lenet5() -> nn.Sequential:
    """LeNet-5 as in Caffe's ``examples/mnist/lenet.prototxt``; 431,080 parameters.

    Caffe's LeNet has no nonlinearity after the convolutions (the max pools are its only
    nonlinearity there) and one ReLU between the two fully connected layers; this follows it.
    """
    return nn.Sequential(
        nn.Conv2d(1, 20, kernel_size=5),  # 28x28 -> 24x24
        nn.MaxPool2d(2),  # -> 12x12
        nn.Conv2d(20, 50, kernel_size=5),  # -> 8x8
        nn.MaxPool2d(2),  # -> 4x4, 50 * 16 = 800 features
        nn.Flatten(),
        nn.Linear(800, 500),
        nn.ReLU(),
        nn.Linear(500, 10),
    )


MODELS: dict[str, Callable[[], nn.Sequential]] = {"lenet300": lenet300, "lenet5": lenet5}


def build_model(name: str) -> nn.Sequential:
    """Build a fresh (untrained) model by name; ``ValueError`` lists the known names."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; known models are {', '.join(sorted(MODELS))}"
        ) from None
    return factory()
