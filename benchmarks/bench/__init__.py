"""Speed benchmarks: every method's paper recipe (:mod:`~benchmarks.bench.methods`, ``python -m
benchmarks bench``), the dense CRF (:mod:`~benchmarks.bench.crf`) and data loading
(:mod:`~benchmarks.bench.loading`); ``PERF.md`` beside them holds the measured figures."""
