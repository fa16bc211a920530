"""The roles wired into processes: what `gamecast up` starts, and what tests and benchmarks
start."""
