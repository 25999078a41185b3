"""One exception family whose messages a user can act on.

The CLI prints ``str(error)`` on one line and exits with ``error.exit_code``; the TUI shows it as a
notification. Tracebacks only go to the log file. A message quotes what came from files, models and
tools (ids, names, paths), so ``str(error)`` writes their control characters as visible escapes
(:func:`smoltui.safe_text.printable`); ``error.message`` keeps the text as it was.
"""

from __future__ import annotations

from smoltui.safe_text import printable


class SmoltuiError(Exception):
    """Base of every error we expect a user to see."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return printable(self.message, multiline=True)


class ConfigError(SmoltuiError):
    """The config file or a setting is wrong."""

    exit_code = 3


class ModelError(SmoltuiError):
    """A model cannot be found, read or loaded."""

    exit_code = 4


class StoreError(SmoltuiError):
    """The data directory or the SQLite store cannot be used."""

    exit_code = 5


class BackendError(SmoltuiError):
    """Generation failed inside a backend."""

    exit_code = 6


class NetworkError(SmoltuiError):
    """A download or remote call failed."""

    exit_code = 7


class DatabaseRefused(SmoltuiError):
    """The database file is damaged, another program's, or not a database at all: it was checked
    without writing a byte and left as it is.

    Not a :class:`StoreError` on purpose: a front end that falls back to a throwaway store when the
    data directory cannot be used (the TUI) must not do so here, or the user would chat into a store
    that keeps nothing while their own file waits, unnoticed, to be repaired.
    """

    exit_code = 5
