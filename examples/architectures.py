"""PyTorch architectures for the shared MNIST and CIFAR-10 checkpoints in ../shared/data/models_* (see their READMEs).

Written from the README's layer descriptions so the published state dicts load with strict keys. Use them as
model specs for ``robust scan``, e.g.::

    robust scan examples/architectures.py:LeNet5 \
        --weights ../shared/data/models_mnist/advertorch__mnist_lenet5_clntrained.pt \
        --data ../shared/data/mnist/mnist_test.npz --eps 0.3

    robust scan examples/architectures.py:ConvSmallWK \
        --weights ../shared/data/models_mnist/convex_adversarial__mnist.pth \
        --data ../shared/data/mnist/mnist_test.npz --eps 0.1

Every MNIST model takes (N, 1, 28, 28) inputs in [0,1] (no normalisation) and returns (N, 10) logits. The CIFAR-10
models (../shared/data/models_cifar10) take (N, 3, 32, 32) and need the README's normalisation, given to robust::

    robust scan examples/architectures.py:ConvSmallCifarWK \
        --weights ../shared/data/models_cifar10/convex_adversarial__cifar_small_8px.pth --weights-key state_dict.0 \
        --mean 0.485,0.456,0.406 --std 0.225,0.225,0.225 \
        --data ../shared/data/cifar10/cifar10_test_first100_lossless.npz --eps 8/255
"""

from __future__ import annotations

import torch
from torch import nn


class LeNet5(nn.Module):
    """The "LeNet5" of advertorch's ``test_utils.py`` (checkpoints ``advertorch__mnist_lenet5_*.pt``).

    conv1 Conv(1,32,3,1,1) -> ReLU -> MaxPool2 -> conv2 Conv(32,64,3,1,1) -> ReLU -> MaxPool2 -> flatten (C,H,W)
    -> linear1 FC(3136,200) -> ReLU -> linear2 FC(200,10). State dict keys: conv1, conv2, linear1, linear2.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3, stride=1, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, stride=1, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.linear1 = nn.Linear(7 * 7 * 64, 200)
        self.relu3 = nn.ReLU()
        self.linear2 = nn.Linear(200, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = x.flatten(1)
        return self.linear2(self.relu3(self.linear1(x)))


class ConvSmallWK(nn.Sequential):
    """Wong & Kolter's small MNIST CNN (``convex_adversarial__mnist.pth``, ``abcrown__sdp_mnist_cnn_a_adv.model``,
    and each stage of ``convex_adversarial__mnist_small_0_3.pth`` with ``--weights-key state_dict.0``).

    Conv(1,16,4,2,1) -> ReLU -> Conv(16,32,4,2,1) -> ReLU -> Flatten -> FC(1568,100) -> ReLU -> FC(100,10);
    as an nn.Sequential its parameters sit at indices 0, 2, 5 and 7.
    """

    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(1, 16, kernel_size=4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=4, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, 100),
            nn.ReLU(),
            nn.Linear(100, 10),
        )


class ConvSmallCifarWK(nn.Sequential):
    """Wong et al.'s small CIFAR-10 CNN (``convex_adversarial__cifar_small_8px.pth`` and ``..._36px_l2.pth``, each
    cascade stage with ``--weights-key state_dict.0``; also ``abcrown__sdp_cifar_cnn_a_*.model``, flat state dicts).

    Conv(3,16,4,2,1) -> ReLU -> Conv(16,32,4,2,1) -> ReLU -> Flatten -> FC(2048,100) -> ReLU -> FC(100,10).
    Normalisation (README): mean 0.485,0.456,0.406, std 0.225 (convex_adversarial); the SDP models use their own.
    """

    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(3, 16, kernel_size=4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=4, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32 * 8 * 8, 100),
            nn.ReLU(),
            nn.Linear(100, 10),
        )


class ConvSmallCifarERAN(nn.Sequential):
    """ERAN's "ConvSmall" for CIFAR-10 (``abcrown__eran_cifar_conv_small_pgd.pth``, ``--weights-key state_dict.0``).

    Conv(3,16,4,2,0) -> ReLU -> Conv(16,32,4,2,0) -> ReLU -> Flatten -> FC(1152,100) -> ReLU -> FC(100,10).
    Normalisation (README): mean 0.4914,0.4822,0.4465, std 0.2023,0.1994,0.2010.
    """

    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(3, 16, kernel_size=4, stride=2, padding=0),
            nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=4, stride=2, padding=0),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32 * 6 * 6, 100),
            nn.ReLU(),
            nn.Linear(100, 10),
        )
