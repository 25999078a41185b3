"""Model runtimes behind one async streaming protocol (see base.py)."""
