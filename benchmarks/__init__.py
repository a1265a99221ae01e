"""meterhub's benchmarks: figures against goals, run as ``python -m benchmarks`` (see BENCHMARKS.md)."""
