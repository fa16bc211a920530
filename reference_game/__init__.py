"""The reference game and its colour maths: what a container streams and a verifier replays."""
