"""Which formats the gateway writes, and the one call that rewrites a request's headers."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from mtlskit.forward._aws import AwsMode, aws_headers
from mtlskit.forward._client import ForwardedClient
from mtlskit.forward._gcp import GcpHeaderNames, gcp_headers
from mtlskit.forward._headers import Headers
from mtlskit.forward._rfc9440 import rfc9440_headers
from mtlskit.forward._sanitize import sanitize_headers
from mtlskit.forward._verdict import verdict_headers
from mtlskit.forward._xfcc import XfccConfig, xfcc_headers

__all__ = ["ForwardConfig", "HeaderFormat", "forward_headers", "rewrite_headers"]


class HeaderFormat(StrEnum):
    """The names ``[forward] formats`` takes in gateway.toml (DESIGN.md §6)."""

    XFCC = "xfcc"
    GCP = "gcp"
    AWS = "aws"
    RFC9440 = "rfc9440"
    VERDICT = "verdict"


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardConfig:
    """Formats to write and their options; by default every format, in the order listed.

    The verdict is on by default because in ``allow_invalid_or_missing`` mode it is the
    only header that tells a backend why a client was not verified.
    """

    formats: tuple[HeaderFormat, ...] = tuple(HeaderFormat)
    xfcc: XfccConfig = field(default_factory=XfccConfig)
    gcp: GcpHeaderNames = field(default_factory=GcpHeaderNames)
    aws: AwsMode = AwsMode.VERIFY
    sanitize_also: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        formats = tuple(HeaderFormat(f) for f in self.formats)
        if len(set(formats)) != len(formats):
            raise ValueError("a header format is listed twice")
        object.__setattr__(self, "formats", formats)
        object.__setattr__(self, "aws", AwsMode(self.aws))

    @property
    def sanitized_names(self) -> tuple[str, ...]:
        """Names removed on top of the built-in list: the configured GCP names and extras."""
        return self.gcp.names() + self.sanitize_also


def forward_headers(client: ForwardedClient, config: ForwardConfig) -> list[tuple[bytes, bytes]]:
    """Every identity header the enabled formats carry for ``client``."""
    out: list[tuple[bytes, bytes]] = []
    for kind in config.formats:
        if kind is HeaderFormat.XFCC:
            out += xfcc_headers(client, config.xfcc)
        elif kind is HeaderFormat.GCP:
            out += gcp_headers(client, config.gcp)
        elif kind is HeaderFormat.AWS:
            out += aws_headers(client, config.aws)
        elif kind is HeaderFormat.RFC9440:
            out += rfc9440_headers(client)
        else:
            out += verdict_headers(client)
    return out


def rewrite_headers(
    headers: Headers, client: ForwardedClient, config: ForwardConfig
) -> list[tuple[bytes, bytes]]:
    """The request's headers, sanitized, followed by this hop's identity headers."""
    return sanitize_headers(headers, also=config.sanitized_names) + forward_headers(client, config)
