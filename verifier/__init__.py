"""Verifiers: the headless client that plays bot sessions, measures them and reports verdicts."""
