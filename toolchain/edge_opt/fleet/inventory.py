"""The device inventory: a YAML file naming devices, their addresses, tags and credentials.

defaults:                      # optional; every device inherits these unless it sets its own
  token_file: ~/.edge/token
devices:
  - name: pi-kitchen
    address: pi-kitchen.local:50051
    tags: [pi4, lab]
    tls_ca: ~/.edge/ca.pem     # TLS; client_cert / client_key for mTLS; server_name to override the host name
  - name: nuc-1
    address: 10.0.0.5:50051
    tags: [x86]
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edge_opt.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Credentials(_Strict):
    token_file: Path | None = None
    tls_ca: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    server_name: str | None = None


class Device(Credentials):
    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    address: str = Field(pattern=r"^[^\s:]+:\d{1,5}$")
    tags: tuple[str, ...] = ()


class Inventory(_Strict):
    defaults: Credentials = Credentials()
    devices: tuple[Device, ...]

    @field_validator("devices")
    @classmethod
    def _unique(cls, devices: tuple[Device, ...]) -> tuple[Device, ...]:
        names = [d.name for d in devices]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"device names must be unique; repeated: {', '.join(duplicates)}")
        return devices

    def resolved(self) -> list[Device]:
        """Devices with the defaults filled in and ``~`` expanded."""
        out = []
        for device in self.devices:
            values = device.model_dump()
            for key, default in self.defaults.model_dump().items():
                if values.get(key) is None:
                    values[key] = default
            for key in ("token_file", "tls_ca", "client_cert", "client_key"):
                if values.get(key) is not None:
                    values[key] = Path(values[key]).expanduser()
            out.append(Device(**values))
        return out

    def select(self, names: list[str] | None = None, tags: list[str] | None = None) -> list[Device]:
        """Devices named in ``names`` or carrying any of ``tags`` (all when neither is given).

        Raises:
            ConfigError: a name that is not in the inventory.
        """
        devices = self.resolved()
        if not names and not tags:
            return devices
        known = {d.name for d in devices}
        unknown = sorted(set(names or []) - known)
        if unknown:
            raise ConfigError(f"unknown device(s) {', '.join(unknown)}; the inventory has {', '.join(sorted(known))}")
        chosen = [d for d in devices if d.name in (names or []) or set(d.tags) & set(tags or [])]
        if not chosen:
            carried = sorted({t for d in devices for t in d.tags})
            raise ConfigError(f"no device carries the tag(s) {', '.join(tags or [])}; the inventory's tags: {', '.join(carried)}")
        return chosen


def load_inventory(path: Path) -> Inventory:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read inventory {path}: {exc.strerror}; pass --inventory FILE") from None
    except yaml.YAMLError:
        raise ConfigError(f"inventory {path} is not valid YAML; fix the syntax") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"inventory {path} must be a mapping with a 'devices' list")
    try:
        return Inventory.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        # A misspelt key also makes its correct spelling "missing": name the misspelling, it is the cause.
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        loc = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            allowed = ", ".join(Device.model_fields)
            raise ConfigError(f"{path}: unknown key {loc!r}; a device has {allowed}") from None
        raise ConfigError(f"{path}: invalid {loc!r}: {first['msg']}; fix that entry of the inventory") from None
