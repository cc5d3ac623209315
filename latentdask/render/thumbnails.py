"""Images instead of dots: where the dashboard draws real images over the projection.

The canvas in view is cut into a coarse grid of :data:`CELLS`; a cell is **dense** when it
holds at least :data:`DENSE_SHARE` of the points an even spread would give each cell. In
each dense cell the densest pixel is found, and the real point nearest to that pixel's
centre (in the view's scaled plane, from the plane indexes on the workers) is the cell's
representative: its image is drawn over the cell. The grid follows the zoom: the counts are
those of the canvas shown.
"""

from __future__ import annotations

import numpy as np

#: the grid over the canvas: columns, rows
CELLS = (7, 6)
#: a cell is dense when it holds at least this share of the points per cell of an even spread
DENSE_SHARE = 0.5


def dense_spots(counts: np.ndarray, cells: tuple[int, int] = CELLS) -> list[tuple[int, int, int, int]]:
    """(cell column, cell row, pixel row, pixel column) of the densest pixel of each dense cell.

    ``counts`` is a canvas as datashader gives it, (height, width), row 0 at the bottom; cells
    split it as evenly as whole pixels allow. Ties go to the first pixel in row-major order.
    """
    height, width = counts.shape
    columns = np.linspace(0, width, cells[0] + 1).astype(int)
    rows = np.linspace(0, height, cells[1] + 1).astype(int)
    even = counts.sum() / (cells[0] * cells[1])
    spots = []
    for r in range(cells[1]):
        for c in range(cells[0]):
            cell = counts[rows[r] : rows[r + 1], columns[c] : columns[c + 1]]
            if cell.size and cell.sum() > 0 and cell.sum() >= DENSE_SHARE * even:
                i, j = np.unravel_index(np.argmax(cell), cell.shape)
                spots.append((c, r, rows[r] + int(i), columns[c] + int(j)))
    return spots


def pixel_centre(
    i: int, j: int, x_range: tuple[float, float], y_range: tuple[float, float], shape: tuple[int, int]
) -> tuple[float, float]:
    """The data coordinates of the centre of canvas pixel (row ``i`` from the bottom, column ``j``)."""
    height, width = shape
    x = x_range[0] + (j + 0.5) * (x_range[1] - x_range[0]) / width
    y = y_range[0] + (i + 0.5) * (y_range[1] - y_range[0]) / height
    return x, y


def compose(
    images: list[tuple[int, int, np.ndarray]], shape: tuple[int, int], cells: tuple[int, int] = CELLS
) -> np.ndarray:
    """An RGBA canvas (height, width, 4), row 0 at the top, transparent but for each image
    (uint8 RGB) centred in its cell (cell column, cell row from the bottom) and fitted to it."""
    from PIL import Image

    height, width = shape
    canvas = np.zeros((height, width, 4), dtype=np.uint8)
    columns = np.linspace(0, width, cells[0] + 1).astype(int)
    rows = np.linspace(0, height, cells[1] + 1).astype(int)
    for c, r, rgb in images:
        cell_w, cell_h = columns[c + 1] - columns[c], rows[r + 1] - rows[r]
        side = max(min(cell_w, cell_h) - 4, 1)  # a margin: neighbouring thumbnails do not touch
        fitted = Image.fromarray(rgb)
        fitted.thumbnail((side, side))
        pixels = np.asarray(fitted.convert("RGB"))
        h, w = pixels.shape[:2]
        top = height - rows[r + 1] + (cell_h - h) // 2  # cell rows count from the bottom
        left = columns[c] + (cell_w - w) // 2
        canvas[top : top + h, left : left + w, :3] = pixels
        canvas[top : top + h, left : left + w, 3] = 255
    return canvas
