"""Independent NumPy references shared by several test files (written out from the formulas, no hf_topo code)."""

import numpy as np


def morans_i_numpy(grid: np.ndarray) -> float:
    """Moran's I with queen neighbours (weight 1, clipped at the border), from the double sum:
    I = (n / W) Σ_ij w_ij z_i z_j / Σ_i z_i²."""
    height, width = grid.shape
    centred = grid - grid.mean()
    numerator, total_weight = 0.0, 0
    for r in range(height):
        for c in range(width):
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    rr, cc = r + dr, c + dc
                    if (dr or dc) and 0 <= rr < height and 0 <= cc < width:
                        numerator += centred[r, c] * centred[rr, cc]
                        total_weight += 1
    return grid.size / total_weight * numerator / (centred**2).sum()
