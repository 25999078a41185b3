"""Chat sessions, the event bus and the SQLite store. Never imports Textual."""
