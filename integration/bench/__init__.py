"""`make bench`: the filter's cost against plain Envoy. See run.py and BENCHMARKS.md."""
