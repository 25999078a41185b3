from pathlib import Path

import pytest

from smoltui.config import load_config, physical_cores
from smoltui.errors import ConfigError
from smoltui.paths import Paths


def test_missing_config_file_gives_defaults(tmp_path: Path) -> None:
    config = load_config(tmp_path / "absent.toml", environ={})
    assert config.model.default is None
    assert config.model.n_ctx == 4096
    assert config.chat.think is False
    assert config.keymap == {}


def test_values_keymap_and_env_overrides(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[model]\ndefault = "~/m.gguf"\nn_ctx = 8192\n[chat]\nthink = true\n'
        '[keymap]\n"chat.think" = "ctrl+k"\n',
        encoding="utf-8",
    )
    config = load_config(path, environ={"SMOLTUI_THREADS": "3"})
    assert config.model.default == "~/m.gguf"
    assert config.model.n_ctx == 8192
    assert config.model.threads == 3
    assert config.chat.think is True
    assert config.keymap == {"chat.think": "ctrl+k"}


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[model]\nn_ctx = = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert str(path) in message and "line 2" in message and "\n" not in message


def test_wrong_type_and_unknown_key_are_named(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[model]\nn_ctx = "big"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"model\.n_ctx"):
        load_config(path, environ={})
    path.write_text("[chat]\nthinking = true\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"chat\.thinking: Extra inputs are not permitted"):
        load_config(path, environ={})


def test_home_puts_everything_under_one_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMOLTUI_HOME", raising=False)
    paths = Paths.resolve(tmp_path)
    assert paths.config_file == tmp_path / "config.toml"
    assert paths.database == tmp_path / "smoltui.db"
    assert paths.prompt_cache_dir.is_relative_to(tmp_path)
    monkeypatch.setenv("SMOLTUI_HOME", str(tmp_path / "env"))
    assert Paths.resolve().database == tmp_path / "env" / "smoltui.db"


def test_physical_cores_is_positive_and_at_most_logical() -> None:
    import os

    cores = physical_cores()
    assert 1 <= cores <= (os.cpu_count() or cores)


def test_backend_threads_default_to_physical_cores_and_follow_the_config(tmp_path: Path) -> None:
    from smoltui.backends.models import ModelRef
    from smoltui.config import Config
    from smoltui.core import build_backend

    ref = ModelRef("m.gguf", "path", tmp_path / "m.gguf")
    paths = Paths.resolve(tmp_path)
    backend = build_backend(ref, Config(), paths)
    assert backend.settings.n_threads == physical_cores()
    assert backend.settings.prompt_cache_dir == paths.prompt_cache_dir
    config = Config.model_validate({"model": {"threads": 3, "prompt_cache": False}})
    backend = build_backend(ref, config, paths)
    assert backend.settings.n_threads == 3 and backend.settings.prompt_cache_dir is None


def test_mcp_servers_and_tool_settings(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[tools]\nweb_deny = ["*.internal"]\n'
        '[[mcp.servers]]\nname = "git"\ncommand = "uvx"\nargs = ["mcp-server-git"]\n',
        encoding="utf-8",
    )
    config = load_config(path, environ={})
    (server,) = config.mcp.servers
    # No `risk` set: the server's own annotations say (an explicit risk overrides them for every tool).
    assert (server.name, server.command, server.args, server.risk) == ("git", "uvx", ["mcp-server-git"], None)
    assert config.tools.web_deny == ["*.internal"]
    path.write_text('[[mcp.servers]]\nname = "git"\ncommand = "uvx"\nrisk = "write"\n', encoding="utf-8")
    assert load_config(path, environ={}).mcp.servers[0].risk == "write"
    path.write_text('[[mcp.servers]]\nname = "bad name"\ncommand = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"mcp\.servers\.0\.name"):
        load_config(path, environ={})
