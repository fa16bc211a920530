"""gamecast: an open cloud-gaming network. The `gamecast` command lives in gamecast.cli."""
