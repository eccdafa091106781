"""``authz.toml``: what ``mtlskit authz-server --config FILE`` reads.

```toml
[listen]
address = "127.0.0.1:9191"          # plain HTTP, loopback: only the proxy talks to it

[client_auth]                       # the keys of gateway.toml's [client_auth], plus intermediates
mode = "reject_invalid"             # or "allow_invalid_or_missing": always 200, verdict headers
trust = ["ca/root.pem"]
intermediates = ["ca/issuing.pem"]  # nginx/HAProxy forward the leaf only
pins = []                           # pinned self-signed clients: "client/cert.pem" or "sha256:HEX"
crls = ["crl.pem"]
spiffe_bundles = {}
policy = "policy.toml"              # omitted: every verified client is allowed
allow_missing_eku = false
max_chain_depth = 8

[cache]
enabled = true
max_entries = 100000
ttl = 300                           # seconds an accept is kept (never past notAfter/nextUpdate)
reject_ttl = 30

[forward]
formats = ["xfcc", "verdict"]       # identity headers returned to the proxy on allow

[log]
decisions = "-"                     # JSON lines; a path, or "-" for standard error
```

``[client_auth]`` is the gateway's own section model (``gateway._config``), extended
with the two keys a proxy-side checker needs: ``intermediates`` and
``allow_stale_crls``. Relative paths are relative to the file's directory (DESIGN §6).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mtlskit.errors import ConfigError
from mtlskit.files import read_bytes
from mtlskit.gateway._config import ClientAuthConfig, ClientAuthMode, parse_address
from mtlskit.tomlconfig import config_error, parse_toml

__all__ = ["AuthzServerConfig", "ClientAuthMode", "load_config", "parse_address"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ListenSection(_Section):
    address: str = "127.0.0.1:9191"

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        parse_address(value)
        return value


class ClientAuthSection(ClientAuthConfig):
    """gateway.toml's ``[client_auth]``, plus what a checker behind a proxy needs."""

    intermediates: list[Path] = Field(default_factory=list)  # nginx, HAProxy: leaf only
    allow_stale_crls: bool = False


class CacheSection(_Section):
    enabled: bool = True
    max_entries: int = Field(default=100_000, ge=1)
    ttl: float = Field(default=300.0, gt=0)
    reject_ttl: float = Field(default=30.0, ge=0)


class ForwardSection(_Section):
    formats: list[Literal["xfcc", "gcp", "aws", "rfc9440", "verdict"]] = ["xfcc", "verdict"]


class LogSection(_Section):
    decisions: str = "-"


class AuthzServerConfig(_Section):
    listen: ListenSection = ListenSection()
    client_auth: ClientAuthSection
    cache: CacheSection = CacheSection()
    forward: ForwardSection = ForwardSection()
    log: LogSection = LogSection()


def _absolute(config: AuthzServerConfig, base: Path) -> AuthzServerConfig:
    def fix(path: Path) -> Path:
        return path if path.is_absolute() else base / path

    auth = config.client_auth
    log = config.log
    decisions = log.decisions if log.decisions == "-" else str(fix(Path(log.decisions)))
    return config.model_copy(
        update={
            "client_auth": auth.model_copy(
                update={
                    "trust": [fix(p) for p in auth.trust],
                    "pins": [auth.pin_path(p, base) for p in auth.pins],
                    "intermediates": [fix(p) for p in auth.intermediates],
                    "crls": [fix(p) for p in auth.crls],
                    "spiffe_bundles": {d: fix(p) for d, p in auth.spiffe_bundles.items()},
                    "policy": fix(auth.policy) if auth.policy else None,
                }
            ),
            "log": log.model_copy(update={"decisions": decisions}),
        }
    )


def load_config(path: str | Path) -> AuthzServerConfig:
    """Parse and validate; a ``ConfigError`` names the file and the key."""
    source = str(path)
    data = parse_toml(read_bytes(path, what="config file"), source=source)
    try:
        config = AuthzServerConfig.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, source=source) from None
    auth = config.client_auth
    if not (auth.trust or auth.pins or auth.spiffe_bundles):
        raise ConfigError(
            "[client_auth] needs at least one of trust, pins or spiffe_bundles", source=source
        )
    return _absolute(config, Path(path).resolve().parent)
