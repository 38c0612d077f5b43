from __future__ import annotations

from pathlib import Path

import pytest

from livecommerce.settings import Settings, SettingsError


def test_environment_then_flags() -> None:
    environ = {
        "LIVECOMMERCE_PORT": "9001",
        "LIVECOMMERCE_DATA_DIR": "/tmp/x",
        "LIVECOMMERCE_DEMO": "yes",
    }
    settings = Settings.load(environ, port=9002)
    assert settings.port == 9002
    assert settings.data_dir == Path("/tmp/x")
    assert settings.demo is True
    assert settings.embedded


def test_bad_values_are_named() -> None:
    with pytest.raises(SettingsError, match="LIVECOMMERCE_PORT"):
        Settings.load({"LIVECOMMERCE_PORT": "eighty"})
    with pytest.raises(SettingsError, match="redis_url"):
        Settings.load({}, redis_url="http://nope")
    with pytest.raises(SettingsError, match="frame_bytes_max"):
        Settings.load({"LIVECOMMERCE_FRAME_BYTES_MAX": "0"})
