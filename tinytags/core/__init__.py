"""Pure domain code (no Spark, no network), shared by the jobs, the web app and the benchmarks."""
