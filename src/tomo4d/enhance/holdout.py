"""Which slices of a training pair validate: short blocks spread through the depth, with guard slices.

A contiguous block at the end of the stack (the split before issue 19's session 10) validates on one
material of a layered sample only (on the battery phantom, the separator), so the InDI step count and
the validation curve were chosen on the wrong material.  :func:`holdout_split` holds out ``blocks``
short blocks centred at ``(i + 1/2) / blocks`` of the depth (top, middle, bottom for 3 blocks), and
removes ``guard`` slices on each side of every block from training.

The guard of the 3D route (:data:`Z_GUARD`, 6 HQ slices): the network is 2D (one slice in, one out,
no z context), so the only z coupling of a training slice is its input, the LQ up-sampled x2 along z
(cubic: an HQ slice's input reaches 2 LQ slices beyond the one covering it) and resampled by the
registration (one more sub-voxel tap).  Training slices more than 3 LQ slices = 6 HQ slices away
never take input from an LQ slice that images a validation slice.  The slices route (independent
2D pairs, or strips of one pair) has no z coupling: guard 0 there.

Small stacks: the split keeps at least half of the slices for training.  When ``blocks`` blocks
with their guards do not fit, it uses fewer blocks, then halves the guard (down to 0); the
result's ``note`` says what was given up (empty when nothing was).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validate import check_int, check_number
from ..errors import InputError, check_choice

__all__ = ["HOLDOUTS", "Z_GUARD", "HoldoutSplit", "holdout_split", "spread_pick"]

#: guard slices of the 3D route (module docstring)
Z_GUARD = 6
#: ``"spread"``: blocks through the depth (default); ``"end"``: one block at the end (models trained before)
HOLDOUTS = ("spread", "end")


@dataclass(frozen=True)
class HoldoutSplit:
    """Training and validation slices of a stack.

    Attributes
    ----------
    train, val : tuple of int
        Slice indices used for training / held out for validation (sorted, disjoint).
    guard_slices : tuple of int
        Slices used for neither (the guards beside the validation blocks).
    blocks : tuple of (int, int)
        The validation blocks as ``(first, last)`` slice indices.
    guard : int
        Guard slices on each side of a block.
    note : str
        What the split gave up on a small stack (fewer blocks, a smaller guard); empty otherwise.
    """

    train: tuple[int, ...]
    val: tuple[int, ...]
    guard_slices: tuple[int, ...]
    blocks: tuple[tuple[int, int], ...]
    guard: int
    note: str = ""
    holdout: str = "spread"

    def to_dict(self) -> dict:
        """The split as the model folder's provenance records it (JSON types)."""
        return {"holdout": self.holdout, "val_blocks": [list(b) for b in self.blocks], "guard": self.guard,
                "n_train": len(self.train), "holdout_note": self.note}


def _layout(n: int, n_val: int, b: int, g: int) -> tuple[list[tuple[int, int]], set[int]] | None:
    """``b`` blocks of ``n_val`` slices in all, centred at ``(i + 1/2) / b`` of ``n``; None if two overlap."""
    sizes = [n_val // b + (1 if i < n_val % b else 0) for i in range(b)]
    blocks, guards, prev_end = [], set(), -1
    for i, s in enumerate(sizes):
        a = int(np.clip(int(round((i + 0.5) * n / b - s / 2)), 0, n - s))
        if a - g <= prev_end:            # the block or its guard would touch the previous block
            return None
        blocks.append((a, a + s - 1))
        guards.update(range(max(0, a - g), a))
        guards.update(range(a + s, min(n, a + s + g)))
        prev_end = a + s - 1 + g
    return blocks, guards


def holdout_split(n: int, val_fraction: float = 0.1, *, guard: int = Z_GUARD, blocks: int = 3,
                  holdout: str = "spread") -> HoldoutSplit:
    """Split ``n`` slices into training and validation slices (see the module docstring).

    Parameters
    ----------
    n : int
        Slices (or strips) of the stack.
    val_fraction : float
        Fraction of the slices held out (at least one).
    guard : int
        Slices removed from training on each side of a validation block.
    blocks : int
        Validation blocks (fewer on a small stack).
    holdout : {"spread", "end"}
        ``"end"``: one block at the end, no guard (the split of models trained before; kept to re-make
        their validation slices).
    """
    n = check_int("n", n, minimum=2)
    val_fraction = check_number("val_fraction", val_fraction, minimum=0, maximum=0.9, exclusive_minimum=True)
    guard = check_int("guard", guard, minimum=0)
    blocks = check_int("blocks", blocks, minimum=1)
    check_choice("holdout", holdout, HOLDOUTS)
    n_val = max(1, int(round(val_fraction * n)))
    if n - n_val < 1:
        raise InputError(f"{n} slices are too few to hold out {val_fraction:.0%} for validation; give more slices "
                         "or a smaller val_fraction")
    if holdout == "end":
        return HoldoutSplit(tuple(range(n - n_val)), tuple(range(n - n_val, n)), (), ((n - n_val, n - 1),), 0,
                            "one block at the end (the split of models trained before issue 19's session 10)",
                            holdout="end")
    min_train = max(1, (n + 1) // 2)
    nb = min(blocks, n_val)
    for b, g in _candidates(nb, guard):
        lay = _layout(n, n_val, b, g)
        if lay is None:
            continue
        bl, guards = lay
        val = {z for a, e in bl for z in range(a, e + 1)}
        train = [z for z in range(n) if z not in val and z not in guards]
        if len(train) < min_train:
            continue
        given_up = ([f"{b} validation block(s) instead of {nb}"] if b < nb else []) + \
                   ([f"a guard of {g} slice(s) instead of {guard}"] if g < guard else [])
        note = (f"{n} slices are too few for the full split: " + ", ".join(given_up)
                + " (half of the slices at least train)") if given_up else ""
        return HoldoutSplit(tuple(train), tuple(sorted(val)), tuple(sorted(guards - val)), tuple(bl), g, note)
    raise InputError(f"{n} slices are too few to hold out {n_val} validation slice(s) and train on half of them; "
                     "give more slices or a smaller val_fraction")


def _candidates(nb: int, guard: int):
    """(blocks, guard) in the order tried: the spread kept with a halved guard before one block is used."""
    for g in (guard, guard // 2):
        for b in range(nb, 1, -1):
            yield b, g
    g = guard
    while True:
        yield 1, g
        if g == 0:
            return
        g //= 2


def spread_pick(slices, k: int) -> list[int]:
    """At most ``k`` of ``slices`` evenly spread over the list (first and last included when ``k >= 2``)."""
    s = list(slices)
    if len(s) <= k:
        return s
    idx = np.unique(np.round(np.linspace(0, len(s) - 1, k)).astype(int))
    return [s[i] for i in idx]
