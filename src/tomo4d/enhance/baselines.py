"""Baselines of the comparison: bicubic up-sampling, and configs of the one-step CNN and GAN.

The regression CNN and the GAN use the very same network as InDI (so the
comparison isolates the training objective): train them with
``train(lq, hq, folder, config=baseline_config(config, "regression"))`` or
``"gan"``; they always run one step at t = 1.
"""

from __future__ import annotations

import numpy as np

from .._array import as_float32
from ..errors import check_choice
from ..volume import as_volume
from .config import TrainConfig
from .data import upsample2_axis, upsample2_xy


def bicubic_volume(volume, *, z_interp: bool = True):
    """Bicubic (Keys cubic convolution) x2 up-sampling of a Volume: the no-learning baseline.

    Returns a float32 in-memory :class:`~tomo4d.Volume` with the voxel size halved
    (in-plane only without ``z_interp``).
    """
    vol = as_volume(volume)
    a = as_float32(vol.numpy())
    if z_interp:
        a = upsample2_axis(a, 0)
    out = upsample2_xy(a)
    vz, vy, vx = vol.voxel_size_nm
    vs = (vz / 2 if z_interp else vz, vy / 2, vx / 2)
    return vol.with_data(out.astype(np.float32), step="bicubic x2 up-sampling", voxel_size_nm=vs)


def baseline_config(config: TrainConfig, objective: str) -> TrainConfig:
    """``config`` turned into the one-step ``"regression"`` (CNN) or ``"gan"`` baseline."""
    check_choice("objective", objective, ("regression", "gan"))
    return config.model_copy(update={"objective": objective, "t_point_mass": 1.0, "noise_std": 0.0,
                                     "val_steps": 1})
