"""segrepro's harness: command line (``python -m benchmarks``), receptive-field analysis, data,
evaluation and reports. It uses methods only through the registry in :mod:`methods`."""
