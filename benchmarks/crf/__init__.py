"""Fully connected CRF post-processing: the two backends and their parameters
(:mod:`~benchmarks.crf.dense_crf`) and the permutohedral lattice of the torch backend
(:mod:`~benchmarks.crf.permutohedral`)."""
