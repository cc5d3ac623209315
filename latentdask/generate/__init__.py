"""Artificial z-points: samplers, radius theory, mixtures, scores, sample quality, grids, face rates."""
