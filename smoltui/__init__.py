"""smoltui: chat with SmolLM3 on your own machine, in the terminal."""

__version__ = "0.1.0"
