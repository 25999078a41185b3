"""Where smoltui keeps its config, database, caches and logs.

``--home DIR`` or ``SMOLTUI_HOME`` put everything under one folder (tests rely on this); otherwise the
platform's usual user directories are used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

APP_NAME = "smoltui"
HOME_ENV = "SMOLTUI_HOME"


@dataclass(frozen=True)
class Paths:
    config_dir: Path
    data_dir: Path
    cache_dir: Path

    @classmethod
    def resolve(cls, home: str | os.PathLike[str] | None = None) -> Paths:
        home = home or os.environ.get(HOME_ENV) or None
        if home:
            root = Path(home).expanduser().resolve()
            return cls(config_dir=root, data_dir=root, cache_dir=root / "cache")
        import platformdirs  # only paid for when no home is given

        return cls(
            config_dir=Path(platformdirs.user_config_dir(APP_NAME)),
            data_dir=Path(platformdirs.user_data_dir(APP_NAME)),
            cache_dir=Path(platformdirs.user_cache_dir(APP_NAME)),
        )

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def database(self) -> Path:
        return self.data_dir / "smoltui.db"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "smoltui.log"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def prompt_cache_dir(self) -> Path:
        return self.cache_dir / "prompt-states"

    @property
    def workflows_dir(self) -> Path:
        """The user's own workflows (the TUI lists them; the planner saves there)."""
        return self.data_dir / "workflows"

    @property
    def exports_dir(self) -> Path:
        return self.data_dir / "exports"
