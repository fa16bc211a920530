"""Shared contracts: what several roles speak (wire messages, input events, the frame marker,
stream shapes, signing, the challenge maths, the verdict). Imports nothing else of gamecast."""
