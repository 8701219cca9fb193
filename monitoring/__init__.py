"""Watching the model in production: the drift job and the local traffic generator."""
