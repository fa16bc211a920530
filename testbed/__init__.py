"""Fixtures that tests and benchmarks share and the product never imports: a throwaway Redis
server, a UDP relay that impairs links, and a plain-Python selection oracle."""
