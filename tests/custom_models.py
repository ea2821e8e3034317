"""Users' own models: one compaction cannot handle, and a vision transformer."""

import torch
from torch import nn
from torchvision.models import VisionTransformer


class ChannelShuffleNet(nn.Module):
    """A ShuffleNet-style channel shuffle, which compaction cannot handle."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.classifier = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.a(x))
        b, c, h, w = x.shape
        x = x.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)
        x = torch.relu(self.b(x))
        return self.classifier(x.mean((2, 3)))


class TinyViT(nn.Module):
    """torchvision's VisionTransformer, one layer of two heads; gray images are repeated to RGB."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.vit = VisionTransformer(
            image_size=image_size,
            patch_size=image_size // 2,
            num_layers=1,
            num_heads=2,
            hidden_dim=8,
            mlp_dim=16,
            num_classes=num_classes,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torchvision's ViT takes 3 channels; repeating adds no layer to prune
        return self.vit(x.expand(-1, 3, -1, -1) if self.in_channels == 1 else x)


def tiny_vit(num_classes: int, in_channels: int, image_size: int) -> TinyViT:
    return TinyViT(num_classes, in_channels, image_size)


class UserNet(nn.Module):
    """A user's own model: its constructor takes the class count and nothing else we know."""

    def __init__(self, num_classes: int = 10, hidden: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ItemNet(nn.Module):
    """Reads a value out of a tensor in its forward (``.item()``), which ``torch.func.vmap``
    cannot batch: fused trials of it finetune one at a time."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.classifier = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x))
        scale = max(1.0, x.abs().max().item())  # data-dependent Python control flow
        return self.classifier(x.mean((2, 3)) / scale)


class DictOut(nn.Module):
    """Returns its logits in a dict, as a model of another framework might."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> dict:
        return {"logits": self.fc(x.flatten(1))}


class RGBOnly(nn.Module):
    """Takes 3-channel images, where digits has 1."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


class TwelveOut(nn.Module):
    """Twelve outputs whatever the data's classes."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class TinyResidual(nn.Module):
    """A stem whose output a block adds back to: the block's last conv shares its channels."""

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.classifier = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = x + self.conv2(torch.relu(self.conv1(x)))
        return self.classifier(torch.relu(x).mean((2, 3)))
