"""Benchmarks of jaxlayers against its peers (not tests; nothing here is asserted).

``python -m bench`` runs everything and prints one table; see :mod:`bench.run`.
"""
