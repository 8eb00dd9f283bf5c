"""The settings the embedded cluster was created with, remembered in $SMARTSTART_HOME.

A cluster made with `SMARTSTART_PG_PORT=56432 make up` must still be found by a new
shell without that variable: every command takes the recorded value of a setting it
was not given, and refuses one it was given that differs (naming both).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from smartstart.config import Settings
from smartstart.errors import ConfigurationError

FILE = "cluster.json"
# What identifies the cluster and the platform database in it; pg_bin only when it
# was set explicitly (otherwise it is found, and may move with an upgrade).
KEYS = ("pg_port", "pg_host", "db_name", "db_user", "pg_bin")


def path(settings: Settings) -> Path:
    return settings.home_dir / FILE


def read(settings: Settings) -> dict[str, Any]:
    try:
        data = json.loads(path(settings).read_text())
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except (OSError, ValueError) as e:
        raise ConfigurationError(
            f"cannot read the embedded cluster's settings in {path(settings)}: {e}",
            "fix or delete that file (it is written again on the next `smartstart db start`)",
        ) from None
    return {k: v for k, v in data.items() if k in KEYS} if isinstance(data, dict) else {}


def record(settings: Settings, keys: tuple[str, ...] = KEYS) -> bool:
    """Remember settings' values for the cluster in its home, once; False if recorded."""
    target = path(settings)
    if target.exists():
        return False
    values = {k: _plain(getattr(settings, k)) for k in keys}
    if "pg_bin" not in settings.model_fields_set:
        values.pop("pg_bin", None)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(values, indent=2) + "\n")
    os.replace(tmp, target)
    return True


def apply(settings: Settings) -> Settings:
    """settings with the recorded values filled in; an explicit conflicting one is an error."""
    if not settings.embedded:
        return settings
    recorded = read(settings)
    updates: dict[str, Any] = {}
    for key, value in recorded.items():
        if key in settings.model_fields_set:
            given = _plain(getattr(settings, key))
            if given != value:
                name = f"SMARTSTART_{key.upper()}"
                raise ConfigurationError(
                    f"{name}={given} conflicts with the embedded cluster in {settings.home_dir}, "
                    f"created with {name}={value} (recorded in {path(settings)})",
                    f"unset {name} to use {value}, or point SMARTSTART_HOME at another cluster",
                )
        else:
            updates[key] = Path(value) if key == "pg_bin" else value
    return settings.model_copy(update=updates) if updates else settings


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value
