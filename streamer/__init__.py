"""The container agent: frames from the reference game, encoding, the aiortc peer, input."""
