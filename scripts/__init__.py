"""Developer tooling shared by the tests, the benchmarks and the shell scripts here."""
