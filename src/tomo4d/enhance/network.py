"""The U-Net-like network F(x_t, t) of the reference study, and a patch discriminator.

Layout (``depth`` = number of down blocks, ``f`` = ``base_filters``)::

    x_t --conv7x7--> f --[res(t) -> conv3x3/2]*depth--> f*2**depth
        --bottleneck: res(t) with dilated 3x3 convs + plain 3x3--
        --[upsample (nearest+conv3x3; the last one a sub-pixel conv) -> concat skip -> res(t)]*depth--
        --conv7x7--> 1 --tanh--> x_hq estimate in [-1, 1]

``t`` enters through a sin/cos embedding and a dense layer whose output is
added, per channel, inside every residual block.  There is no normalisation
layer, so the network is translation-equivariant for shifts that are
multiples of ``2**depth`` (what makes tiled inference exact away from tile
edges, see :func:`receptive_radius`).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .config import NetworkConfig


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sin/cos embedding of ``t`` (shape ``(B,)``, values in [0, 1]) -> ``(B, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half, 1))
    ang = (t.float()[:, None] * 1000.0) * freqs[None, :]
    emb = torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)
    if emb.shape[1] < dim:
        emb = F.pad(emb, (0, dim - emb.shape[1]))
    return emb


class ResBlock(nn.Module):
    """Residual block: conv -> + dense(t) -> Swish -> conv(s) -> Swish, plus a skip."""

    def __init__(self, c_in: int, c_out: int, t_dim: int, dilations: tuple[int, ...] = (1,)):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb = nn.Linear(t_dim, c_out)
        self.convs = nn.ModuleList(nn.Conv2d(c_out, c_out, 3, padding=d, dilation=d) for d in dilations)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, temb):
        h = self.conv1(x) + self.temb(temb)[:, :, None, None]
        h = F.silu(h)
        for conv in self.convs:
            h = F.silu(conv(h))
        return h + self.skip(x)


class InDINet(nn.Module):
    """F(x_t, t): predicts the HQ image (in [-1, 1]) from the interpolated image x_t.

    Parameters
    ----------
    config : NetworkConfig
        Width, depth, bottleneck dilations, time-embedding size, outer kernel size.

    Notes
    -----
    Input ``x`` has shape ``(B, 1, H, W)`` with H and W multiples of
    ``config.multiple``; ``t`` has shape ``(B,)``.
    """

    def __init__(self, config: NetworkConfig):
        super().__init__()
        self.config = config
        f, d, td = config.base_filters, config.depth, config.time_dim
        k = config.first_kernel
        self.time_mlp = nn.Sequential(nn.Linear(td, td * 2), nn.SiLU(), nn.Linear(td * 2, td * 2))
        t2 = td * 2
        self.stem = nn.Conv2d(1, f, k, padding=k // 2)
        widths = [f * 2 ** i for i in range(d + 1)]
        self.down_res = nn.ModuleList(ResBlock(widths[i], widths[i], t2) for i in range(d))
        self.down = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1) for i in range(d))
        self.mid = ResBlock(widths[d], widths[d], t2, dilations=tuple(config.dilations) + (1,))
        ups = []
        for i in reversed(range(d)):
            if i == 0:  # last up-sampling: sub-pixel convolution
                ups.append(nn.Sequential(nn.Conv2d(widths[1], widths[0] * 4, 3, padding=1), nn.PixelShuffle(2)))
            else:
                ups.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                         nn.Conv2d(widths[i + 1], widths[i], 3, padding=1)))
        self.up = nn.ModuleList(ups)
        self.up_res = nn.ModuleList(ResBlock(widths[i] * 2, widths[i], t2) for i in reversed(range(d)))
        self.head = nn.Conv2d(f, 1, k, padding=k // 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.time_mlp(time_embedding(t, self.config.time_dim))
        h = self.stem(x)
        skips = []
        for res, down in zip(self.down_res, self.down):
            h = res(h, temb)
            skips.append(h)
            h = F.silu(down(h))
        h = self.mid(h, temb)
        for up, res in zip(self.up, self.up_res):
            h = F.silu(up(h))
            h = res(torch.cat([h, skips.pop()], dim=1), temb)
        return torch.tanh(self.head(h))


def receptive_radius(config: NetworkConfig) -> int:
    """Half-width (pixels) of the receptive field of :class:`InDINet` (an upper bound).

    Tiles whose outputs are discarded within this distance of their edges
    give exactly the untiled result.
    """
    r = config.first_kernel // 2  # stem
    for i in range(config.depth):
        s = 2 ** i
        r += 2 * s  # two 3x3 convolutions of the residual block at scale s
        r += s  # stride-2 convolution
    s = 2 ** config.depth
    r += s + sum(s * d for d in config.dilations) + s  # bottleneck: conv1, dilated, plain
    for i in reversed(range(config.depth)):
        s = 2 ** (i + 1)
        r += s + 2 ** i * 2  # up conv, residual block
    r += config.first_kernel // 2
    return int(r)


class PatchDiscriminator(nn.Module):
    """Small fully-convolutional patch discriminator (GAN baseline): one logit per patch."""

    def __init__(self, base_filters: int = 16, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        c_in, c = 1, base_filters
        for i in range(n_layers):
            layers += [nn.Conv2d(c_in, c, 4, stride=2 if i < n_layers - 1 else 1, padding=1), nn.LeakyReLU(0.2)]
            c_in, c = c, c * 2
        layers.append(nn.Conv2d(c_in, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
