"""``smoltui bench``: measure a backend and model, and build the random-weight models it can measure."""
