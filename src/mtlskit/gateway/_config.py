"""``gateway.toml`` (DESIGN.md §6): validated once, paths made absolute, never mutated.

pydantic checks the shape (an unknown key is a ``ConfigError`` that names it);
relative paths are resolved against the config file's directory so the gateway
behaves the same whatever directory it was started from. Reading the files the
config names is ``_generation``'s job, because that is what a reload repeats.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mtlskit.errors import ConfigError, InputError
from mtlskit.files import read_bytes
from mtlskit.tomlconfig import config_error, parse_toml
from mtlskit.trustfiles import parse_pin

__all__ = [
    "RESTART_KEYS",
    "ClientAuthMode",
    "GatewayConfig",
    "cannot_listen",
    "load_config",
    "parse_address",
    "reloadable",
]


class ClientAuthMode(StrEnum):
    """GCP's two mTLS modes, by their GCP meaning."""

    REJECT_INVALID = "reject_invalid"  # a certificate is required and must pass both gates
    ALLOW_INVALID_OR_MISSING = "allow_invalid_or_missing"  # forward with a verdict; backend decides


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) → ``(host, port)``; a ``ValueError`` says what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


@contextlib.contextmanager
def cannot_listen(address: str, *, source: str) -> Iterator[None]:
    """A failed bind (port in use, address not here, privileged port) as the one-line
    ``InputError`` naming the config key, as ``ca serve`` reports it; not a traceback."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InputError(f"cannot listen on {address}: {reason}", source=source) from None


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ListenConfig(_Section):
    address: str = "127.0.0.1:8443"
    cert: Path
    key: Path
    tls_versions: list[Literal["1.2", "1.3"]] = ["1.2", "1.3"]
    # Processes serving the one listening socket, as nginx's worker_processes: a number,
    # or "auto" for one per CPU core (``_workers``).
    workers: int | Literal["auto"] = Field(default=1)

    @field_validator("workers")
    @classmethod
    def _workers(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 256:
            raise ValueError('workers must be between 1 and 256, or "auto"')
        return value

    @property
    def worker_count(self) -> int:
        if self.workers == "auto":
            return len(os.sched_getaffinity(0)) or 1
        return self.workers

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        parse_address(value)
        return value


class ClientAuthConfig(_Section):
    mode: ClientAuthMode = ClientAuthMode.REJECT_INVALID
    trust: list[Path] = []
    # Pinned self-signed clients: each a certificate file or directory (what the TLS
    # handshake needs), or "sha256:HEX", which must then match one of those files (or a
    # trust file): listing a file and its fingerprint refuses a swapped file (``parse_pin``).
    pins: list[str] = []
    crls: list[Path] = []
    spiffe_bundles: dict[str, Path] = {}
    policy: Path | None = None
    allow_missing_eku: bool = False
    max_chain_depth: int = Field(default=8, ge=0, le=16)
    # DANGEROUS: let a publicly trusted root vouch for clients; only with a policy.
    allow_public_roots: bool = False

    @field_validator("pins")
    @classmethod
    def _pins(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                parse_pin(value)
            except InputError as exc:
                raise ValueError(str(exc)) from None
        return values

    def pin_path(self, pin: str, base: Path) -> str:
        """``pin`` with a file pin made absolute against ``base``; a fingerprint as it is."""
        parsed = parse_pin(pin)
        return pin if not isinstance(parsed, Path) or parsed.is_absolute() else str(base / parsed)


class UpstreamConfig(_Section):
    """Where requests go: HTTP upstreams (``urls``) or one in-process ASGI app (``asgi``)."""

    urls: list[str] = []
    asgi: str | None = None  # "package.module:app": served in-process, no proxy hop
    app_dir: Path | None = None  # put on sys.path before importing ``asgi``
    lifespan: Literal["auto", "on", "off"] = "auto"  # as uvicorn's --lifespan
    connect_timeout: float = Field(default=5.0, gt=0)
    read_timeout: float = Field(default=60.0, gt=0)
    # Idle keep-alive connections kept per upstream (and per worker), as nginx's ``keepalive``.
    # A request finding none opens one, closed after it if the pool is full: with 256 clients
    # and 64, three requests in four did (0.4× nginx's rate), with 256 none (0.6×, measured).
    pool_size: int = Field(default=256, ge=0)
    health_interval: float = Field(default=5.0, gt=0)  # how often a down upstream is re-probed

    @field_validator("urls")
    @classmethod
    def _urls(cls, values: list[str]) -> list[str]:
        for url in values:
            if not url.startswith("http://"):
                raise ValueError(f"{url!r}: only http:// upstreams are supported")
            parse_address(url.removeprefix("http://").rstrip("/"))
        return values

    @field_validator("asgi")
    @classmethod
    def _asgi(cls, value: str | None) -> str | None:
        if value is not None:
            module, _, attribute = value.partition(":")
            if not module or not attribute:
                raise ValueError(f"{value!r} is not package.module:attribute")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> UpstreamConfig:
        if bool(self.urls) == (self.asgi is not None):
            raise ValueError("set exactly one of urls (HTTP upstreams) or asgi (in-process app)")
        return self


class ForwardConfig(_Section):
    formats: list[Literal["xfcc", "gcp", "aws", "rfc9440", "verdict"]] = ["xfcc", "verdict"]


class MetricsConfig(_Section):
    address: str | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            parse_address(value)
        return value


class LimitsConfig(_Section):
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    max_headers: int = Field(default=100, ge=1)
    max_body_bytes: int = Field(default=16 * 2**20, ge=0)
    handshake_timeout: float = Field(default=10.0, gt=0)
    idle_timeout: float = Field(default=60.0, gt=0)  # no request (or no bytes mid-request)
    drain_timeout: float = Field(default=10.0, ge=0)  # SIGTERM: how long in-flight work may take
    # Seconds a keep-alive connection serves requests; the first request after it is answered
    # with "Connection: close" (nginx's keepalive_time). Every request is authorized against
    # the current trust and policy anyway; this bounds what a handshake's TLS parameters and
    # a session's lifetime can outlast (a reload's new server certificate, TLS versions).
    max_connection_age: float = Field(default=600.0, gt=0)


class LogConfig(_Section):
    access: str = "-"  # a file path, "-" for standard error, or "off"
    connection: str = "-"  # the same; "off" hides why clients were refused, so think twice


class ReloadConfig(_Section):
    poll_interval: float = Field(default=2.0, ge=0)  # 0: reload on SIGHUP only


class _GatewayModel(_Section):
    listen: ListenConfig
    client_auth: ClientAuthConfig = ClientAuthConfig()
    upstream: UpstreamConfig
    forward: ForwardConfig = ForwardConfig()
    metrics: MetricsConfig = MetricsConfig()
    limits: LimitsConfig = LimitsConfig()
    log: LogConfig = LogConfig()
    reload: ReloadConfig = ReloadConfig()


GatewayConfig = _GatewayModel


def _absolute(model: _GatewayModel, base: Path) -> _GatewayModel:
    """Every configured path resolved against the config file's directory."""

    def fix(path: Path) -> Path:
        return path if path.is_absolute() else base / path

    def fix_log(text: str) -> str:
        return text if text in ("-", "off") else str(fix(Path(text)))

    auth = model.client_auth
    return model.model_copy(
        update={
            "listen": model.listen.model_copy(
                update={"cert": fix(model.listen.cert), "key": fix(model.listen.key)}
            ),
            "client_auth": auth.model_copy(
                update={
                    "trust": [fix(p) for p in auth.trust],
                    # a pin is a fingerprint or a certificate file, relative like every path
                    "pins": [auth.pin_path(p, base) for p in auth.pins],
                    "crls": [fix(p) for p in auth.crls],
                    "spiffe_bundles": {d: fix(p) for d, p in auth.spiffe_bundles.items()},
                    "policy": fix(auth.policy) if auth.policy is not None else None,
                }
            ),
            "upstream": model.upstream.model_copy(
                update={"app_dir": fix(model.upstream.app_dir) if model.upstream.app_dir else None}
            ),
            "log": model.log.model_copy(
                update={
                    "access": fix_log(model.log.access),
                    "connection": fix_log(model.log.connection),
                }
            ),
        }
    )


# Read once at start: the listening sockets, the processes, the log files, the upstream
# pool and the poll loop. A reload names these when they changed and keeps the running value;
# everything else (client_auth, forward, listen cert/key/TLS versions, limits,
# upstream.read_timeout) applies to the next handshake and request.
RESTART_KEYS: Final = frozenset(
    {
        "listen.address",
        "listen.workers",
        "metrics.address",
        "log.access",
        "log.connection",
        "upstream.urls",
        "upstream.asgi",
        "upstream.app_dir",
        "upstream.lifespan",
        "upstream.connect_timeout",
        "upstream.pool_size",
        "upstream.health_interval",
        "reload.poll_interval",
    }
)


def changed_keys(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """``section.key`` for every setting that differs, in file order."""
    return [
        f"{section}.{key}"
        for section in type(old).model_fields
        for key in type(getattr(old, section)).model_fields
        if getattr(getattr(old, section), key) != getattr(getattr(new, section), key)
    ]


def reloadable(new: GatewayConfig, *, running: GatewayConfig) -> GatewayConfig:
    """``new`` with every ``RESTART_KEYS`` setting kept as ``running`` has it."""
    sections: dict[str, Any] = {}
    for name in RESTART_KEYS:
        section, key = name.split(".")
        current = sections.get(section, getattr(new, section))
        sections[section] = current.model_copy(
            update={key: getattr(getattr(running, section), key)}
        )
    return new.model_copy(update=sections)


def config_from_mapping(data: dict[str, Any], *, source: str, base: Path) -> GatewayConfig:
    try:
        model = _GatewayModel.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, source=source) from None
    auth = model.client_auth
    if not (auth.trust or auth.pins or auth.spiffe_bundles):
        raise ConfigError(
            "client_auth needs at least one of trust, pins or spiffe_bundles: "
            "with no trust every client would be refused",
            source=source,
        )
    return _absolute(model, base)


def load_config(path: str | Path, *, asgi: str | None = None) -> GatewayConfig:
    """Read and validate ``gateway.toml``; every failure is a one-line ``ConfigError``.

    ``asgi`` is ``mtlskit serve APP``'s app: it becomes ``upstream.asgi``, and a
    config that also names HTTP upstreams is refused rather than silently overridden.
    """
    source = str(path)
    data = parse_toml(read_bytes(path, what="gateway config"), source=source)
    if asgi is not None:
        upstream = data.get("upstream", {})
        if not isinstance(upstream, dict) or upstream.get("urls"):
            raise ConfigError(
                "upstream.urls is set, but mtlskit serve serves the app it is given",
                source=source,
            )
        data["upstream"] = {**upstream, "asgi": asgi}
    return config_from_mapping(data, source=source, base=Path(path).resolve().parent)
