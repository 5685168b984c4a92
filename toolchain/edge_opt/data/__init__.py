"""The data an export calibrates, trains and evaluates with, and how it becomes the model's input.

``preprocessing``: the steps from stored images to the input tensor (recorded in every manifest); ``split``: a
split and a dataset of two; ``fashion_mnist``: the built-in default; ``readers``: the user's image folders,
``.npz`` files and factories; ``loading``: which of them an export uses and how one source is split.
"""

from __future__ import annotations

from edge_opt.data.fashion_mnist import CLASS_NAMES, FashionMNIST, load_fashion_mnist
from edge_opt.data.preprocessing import FASHION_MNIST_MEAN, FASHION_MNIST_STD, Preprocessing
from edge_opt.data.split import Dataset, Split

__all__ = [
    "CLASS_NAMES",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "Dataset",
    "FashionMNIST",
    "Preprocessing",
    "Split",
    "load_fashion_mnist",
]
