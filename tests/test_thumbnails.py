"""Where the dashboard draws real images over the projection: the dense cells and their placement."""

from __future__ import annotations

import numpy as np

from latentdask.render.thumbnails import compose, dense_spots, pixel_centre


def test_dense_cells_and_their_densest_pixels() -> None:
    counts = np.zeros((6, 8), dtype=np.int64)  # a 4 × 3 grid of 2 × 2 cells, row 0 at the bottom
    counts[0, 1] = 30  # cell (0, 0), its densest pixel (0, 1)
    counts[1, 0] = 2
    counts[5, 7] = 4  # cell (3, 2)
    counts[5, 6] = 4  # a tie: the first pixel in row-major order wins
    counts[3, 3] = 1  # cell (1, 1): 1 point, under half of an even share (41 / 12 = 3.4)
    assert dense_spots(counts, cells=(4, 3)) == [(0, 0, 0, 1), (3, 2, 5, 6)]
    assert dense_spots(np.zeros((6, 8)), cells=(4, 3)) == []


def test_pixel_centres_in_data_coordinates() -> None:
    assert pixel_centre(0, 0, (0.0, 8.0), (-3.0, 3.0), (6, 8)) == (0.5, -2.5)
    assert pixel_centre(5, 7, (0.0, 8.0), (-3.0, 3.0), (6, 8)) == (7.5, 2.5)


def test_images_land_in_their_cells_counted_from_the_bottom() -> None:
    red = np.zeros((10, 10, 3), dtype=np.uint8)
    red[..., 0] = 255
    canvas = compose([(1, 0, red)], (40, 60), cells=(3, 2))  # cells of 20 × 20; (1, 0) is bottom-middle
    opaque = np.argwhere(canvas[..., 3] == 255)
    assert len(opaque) == 100
    (top, left), (bottom, right) = opaque.min(axis=0), opaque.max(axis=0)
    assert (top, bottom) == (25, 34) and (left, right) == (25, 34)  # centred in rows 20–39, columns 20–39
    assert (canvas[opaque[:, 0], opaque[:, 1], :3] == [255, 0, 0]).all()
    assert canvas[..., 3].sum() == 100 * 255  # transparent elsewhere
