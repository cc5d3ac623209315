"""``latentdask bench ...``: measurements against baselines run in the same process.

Each benchmark returns a :class:`~latentdask.bench.report.BenchReport`; the CLI prints
it and can save it as JSON. Baselines live beside the measured code so anyone can
read what was compared.
"""
