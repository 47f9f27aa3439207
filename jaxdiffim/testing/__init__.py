"""Synthetic scenes and shipped real data for tests, demos and benchmarks."""
