"""On-demand benchmarks (not part of make test); results in docs/benchmarks.md."""
