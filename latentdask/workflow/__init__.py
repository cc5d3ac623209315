"""Workflows: the spec, the steps, the runner and the report."""
