"""Sweeps: the grid of DVC experiments and its statistics (grid.py), and running it on many machines with Dask
(cluster.py). No stage imports this package: editing it re-runs nothing."""
