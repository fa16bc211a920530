"""Verifiers: headless bot players that measure containers from the decoded picture."""
