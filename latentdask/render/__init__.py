"""Pictures of every z-point: projections, aggregation, drawing, the render command, the dashboard."""
