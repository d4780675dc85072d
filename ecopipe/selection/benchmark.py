"""digits_hard: a seeded, generated benchmark built offline from scikit-learn's bundled digits.

Each row is one of the 1,797 bundled 8x8 digits redrawn at a severity drawn uniformly from
SEVERITY_LEVELS graded levels (0 = the digit as bundled, 1 = the strongest): a random affine map
(rotation up to MAX_ROTATION_DEG, scale by up to exp(+-MAX_LOG_SCALE), shear up to MAX_SHEAR, shift
up to MAX_SHIFT_PX pixels, bilinear resampling), a blanked square of side up to MAX_OCCLUSION_PX,
and Gaussian pixel noise of standard deviation up to MAX_NOISE; each effect scales with the
severity. The mix of easy and hard rows is what lets a selection strategy beat its members: cheap
members answer the easy rows, the expensive ones are needed only for the hard ones.

Rows drawn from the same bundled digit are near-copies at low severity, so the four splits are
drawn by *source digit*, not by row: no test row is a redrawing of a digit any member or the
router was fitted on (`group_splits`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn import datasets

ROWS = 24_000
SEVERITY_LEVELS = 5
MAX_ROTATION_DEG = 30.0
MAX_LOG_SCALE = 0.25
MAX_SHEAR = 0.3
MAX_SHIFT_PX = 1.5
MAX_OCCLUSION_PX = 4
MAX_NOISE = 0.25
SIDE = 8  # pixels per side of the bundled digits


@dataclass(frozen=True)
class Generated:
    x: np.ndarray  # (rows, 64) float32 in [0, 1]
    y: np.ndarray  # (rows,) int64 digit
    source: np.ndarray  # (rows,) index of the bundled digit each row redraws
    severity: np.ndarray  # (rows,) in [0, 1], SEVERITY_LEVELS graded values


def _resample(images: np.ndarray, inverse: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Bilinear resampling of (n, 8, 8) images: output pixel p reads the source at inverse @ p + shift
    (coordinates about the centre), zero outside the image."""
    n = len(images)
    centre = (SIDE - 1) / 2
    grid = np.stack(np.meshgrid(np.arange(SIDE), np.arange(SIDE), indexing="ij"), -1).reshape(-1, 2) - centre
    source = np.einsum("nij,pj->npi", inverse, grid) + centre - shift[:, None, :]
    top, left = np.floor(source[..., 0]).astype(np.int64), np.floor(source[..., 1]).astype(np.int64)
    down, right = source[..., 0] - top, source[..., 1] - left
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))  # a zero border: reads off the image give 0
    rows = np.arange(n)[:, None]

    def pixel(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        return padded[rows, np.clip(r + 1, 0, SIDE + 1), np.clip(c + 1, 0, SIDE + 1)]

    out = (
        pixel(top, left) * (1 - down) * (1 - right)
        + pixel(top + 1, left) * down * (1 - right)
        + pixel(top, left + 1) * (1 - down) * right
        + pixel(top + 1, left + 1) * down * right
    )
    return out.reshape(n, SIDE, SIDE)


def generate(rows: int, seed: int) -> Generated:
    """`rows` redrawn digits; the same seed gives the same rows."""
    x, y = datasets.load_digits(return_X_y=True)
    images = (x / 16.0).reshape(-1, SIDE, SIDE)
    rng = np.random.default_rng(seed)
    source = rng.integers(0, len(images), rows)
    severity = rng.integers(0, SEVERITY_LEVELS, rows) / (SEVERITY_LEVELS - 1)

    def signed(scale: float, *shape: int) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, (rows, *shape)) * scale * severity.reshape(-1, *[1] * len(shape))

    angle = np.deg2rad(signed(MAX_ROTATION_DEG))
    scale = np.exp(signed(MAX_LOG_SCALE))
    shear = signed(MAX_SHEAR)
    cos, sin = np.cos(angle), np.sin(angle)
    inverse = (
        np.stack([np.stack([cos, shear - sin], -1), np.stack([sin, cos], -1)], -2) / scale[:, None, None]
    )
    out = _resample(images[source], inverse, signed(MAX_SHIFT_PX, 2))

    side = np.round(rng.uniform(0, 1, rows) * MAX_OCCLUSION_PX * severity).astype(np.int64)
    top, left = rng.integers(0, SIDE, rows), rng.integers(0, SIDE, rows)
    index = np.arange(SIDE)
    in_rows = (index[None, :] >= top[:, None]) & (index[None, :] < (top + side)[:, None])
    in_cols = (index[None, :] >= left[:, None]) & (index[None, :] < (left + side)[:, None])
    out[in_rows[:, :, None] & in_cols[:, None, :]] = 0.0
    out += rng.normal(0.0, 1.0, out.shape) * MAX_NOISE * severity[:, None, None]
    flat = np.clip(out, 0.0, 1.0).reshape(rows, SIDE * SIDE).astype(np.float32)
    return Generated(flat, y[source].astype(np.int64), source, severity)


def source_labels() -> np.ndarray:
    """The digit of each bundled image, for splitting the sources stratified by class."""
    return datasets.load_digits().target.astype(np.int64)
