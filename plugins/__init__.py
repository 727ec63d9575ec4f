"""Evaluation plugins, registered by name."""
