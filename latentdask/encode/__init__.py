"""Encoding a dataset into a latent store: the client's run and the workers' shard task."""
