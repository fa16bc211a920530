"""Benchmarks: real stacks on loopback, a table and JSON, a baseline in the same run."""
