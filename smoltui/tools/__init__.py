"""Typed tools the model and workflows can call (issue 3)."""
