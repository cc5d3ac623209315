"""Artificial z-points: samplers, radius theory, scores, nearest neighbours, decoded grids, face rates."""
