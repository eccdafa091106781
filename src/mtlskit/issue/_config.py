"""``ca.toml``: the CA's configuration, validated with pydantic; unknown keys are errors.

Pure: TOML text in, ``CaConfig`` out (and back, for ``ca init``). Every error is a
``ConfigError`` whose message names the file and the key.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import tomllib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mtlskit.certs import KeyType
from mtlskit.errors import ConfigError, InputError
from mtlskit.issue._enroll import ApprovalRule
from mtlskit.issue._policy import IdentityPattern, IdentityPolicy, parse_duration
from mtlskit.issue._profile import PROFILES, CertificateProfile
from mtlskit.issue._provisioner import MAX_SKEW, IdentityTemplate, OidcProvisioner, fetchable

__all__ = ["CaConfig", "ConsoleConfig", "parse_ca_config", "render_ca_config", "validate_ca_config"]

_KEY_TYPES = tuple(kind.value for kind in KeyType)
_EST_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# RFC 7030 §3.2.2's operation names (and the two mtlskit does not serve): a label equal to
# one would make /.well-known/est/LABEL/... read like a typo of an unlabelled path.
_EST_OPERATIONS = frozenset(
    {"cacerts", "simpleenroll", "simplereenroll", "csrattrs", "fullcmc", "serverkeygen"}
)


class ApprovalConfig(BaseModel):
    """``[[approval]]``: identities matching ``ids`` wait for ``approvers`` distinct people."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ids: list[str] = Field(min_length=1)
    approvers: int = Field(default=1, ge=1, le=16)

    @field_validator("ids")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for text in value:
            IdentityPattern.parse(text)
        return value


class ProvisionerConfig(BaseModel):
    """``[[provisioners]]``: tokens from ``issuer`` for ``audience`` enroll as ``identity``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["oidc"]
    name: str = Field(min_length=1)
    issuer: str = Field(min_length=1)
    # A JWKS file (relative to the CA directory); without it the keys come from the
    # issuer's discovery document (https, or http to a loopback address only).
    jwks: str | None = None
    audience: str = Field(min_length=1)
    max_token_age: str = "1h"
    clock_skew: str = "60s"
    identity: str
    require: dict[str, Any] = {}

    @field_validator("max_token_age", "clock_skew")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("clock_skew")
    @classmethod
    def _skew(cls, value: str) -> str:
        if parse_duration(value) > MAX_SKEW:
            raise ValueError(f"{value} is more than the 5m this CA accepts")
        return value

    @field_validator("identity")
    @classmethod
    def _template(cls, value: str) -> str:
        IdentityTemplate.parse(value)
        return value

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @model_validator(mode="after")
    def _discovery(self) -> ProvisionerConfig:
        """Keys found by discovery come over https (or http to loopback): said at load time,
        not as a 503 on every enrollment."""
        if self.jwks is None and not fetchable(self.issuer):
            raise ValueError(
                f"provisioner {self.name!r}: discovery over http:// is only for a loopback "
                "issuer; use https or a static jwks file"
            )
        return self

    def provisioner(self) -> OidcProvisioner:
        return OidcProvisioner(
            name=self.name,
            issuer=self.issuer,
            audience=self.audience,
            identity=IdentityTemplate.parse(self.identity),
            max_token_age=parse_duration(self.max_token_age),
            clock_skew=parse_duration(self.clock_skew),
            jwks=self.jwks,
            require=OidcProvisioner.requirements(self.require),
        )


class EstConfig(BaseModel):
    """``[est]``: RFC 7030 §3.2.2's optional label segment. ``labels`` maps each label to
    the profile certificates enrolled under ``/.well-known/est/LABEL/`` get; the unlabelled
    paths keep the CA's own ``profile``. An unknown label is 404 ``est_label_unknown``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    labels: dict[str, Literal["client-auth", "spiffe"]] = {}

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for label in value:
            if not _EST_LABEL.fullmatch(label):
                raise ValueError(
                    f"label {label!r} is not one path segment of [A-Za-z0-9._-] "
                    "(64 at most, starting with a letter or digit)"
                )
            if label in _EST_OPERATIONS:
                raise ValueError(f"label {label!r} is an EST operation name")
        return value


class Pkcs11Config(BaseModel):
    """``[pkcs11]``: the CA keys live in a PKCS#11 token, named by RFC 7512 URIs.

    No PIN here: it comes from $MTLSKIT_PKCS11_PIN or a PIN file given to each command."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    module: str = Field(min_length=1)
    root: str
    issuing: str | None = None

    @field_validator("root", "issuing")
    @classmethod
    def _uri(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("pkcs11:"):
            raise ValueError(f"{value!r} is not a PKCS#11 URI (pkcs11:token=...;object=...)")
        if value is not None and ("pin-value" in value or "pin-source" in value):
            raise ValueError("a PIN never goes into ca.toml")
        return value


class ConsoleConfig(BaseModel):
    """``[console]``: who may use ``mtlskit ca console`` (identities as in their certificates'
    SAN, compared case-folded) and which CAs their client certificates must chain to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    approvers: list[str] = []  # may approve, deny and revoke
    viewers: list[str] = []  # read-only
    # PEM files relative to the CA directory; empty: the CA's own chain (chain.pem)
    trust_anchors: list[str] = []
    # where a revocation from the console writes the CRL (as `ca crl --out` does)
    crl_file: str = "crl.pem"

    @field_validator("approvers", "viewers")
    @classmethod
    def _identities(cls, value: list[str]) -> list[str]:
        for text in value:
            if not text or text != text.strip() or any(ch.isspace() for ch in text):
                raise ValueError(f"{text!r} is not an identity (a SAN value, no spaces)")
        return [text.casefold() for text in value]

    @field_validator("trust_anchors", "crl_file")
    @classmethod
    def _paths(cls, value: Any) -> Any:
        for text in value if isinstance(value, list) else [value]:
            if not text.strip():
                raise ValueError("an empty path")
        return value


class CaConfig(BaseModel):
    """What a CA issues and to whom. Durations are text (``24h``) so the file reads as written."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    profile: Literal["client-auth", "spiffe"] = "client-auth"
    trust_domain: str | None = None
    intermediate: bool = True
    default_ttl: str = "24h"
    max_ttl: str = "7d"
    crl_validity: str = "7d"
    allowed_ids: list[str] = []
    key_types: list[str] = list(_KEY_TYPES)
    database: str = "ca.db"
    # PostgreSQL: the password is never in ``database``; it comes from this file (first
    # line), from $MTLSKIT_DB_URL (the whole URL), or from libpq (~/.pgpass, $PGPASSWORD).
    database_password_file: str | None = None
    # SQLite only. full: fsync on every commit, a returned certificate survives power loss.
    # normal: WAL without that fsync, survives a crash of mtlskit but not of the machine.
    durability: Literal["full", "normal"] = "full"
    # A CSR's subject CN or SAN that is not the identity being issued: "ignore" drops it
    # and reports it (ca sign output, the enroll response); "must_match" refuses the CSR
    # (ca sign exit 1 by rule csr_names, enrollment identity_mismatch).
    csr_names: Literal["ignore", "must_match"] = "ignore"
    # enrollment: identities that need human approval after their token is redeemed
    approval: list[ApprovalConfig] = []
    # None: root.key/issuing.key files in the CA directory; else keys in a PKCS#11 token
    pkcs11: Pkcs11Config | None = None
    # enrollment with a workload-identity token (OIDC/JWT) instead of a one-time token
    provisioners: list[ProvisionerConfig] = []
    # EST labels (/.well-known/est/LABEL/...), each issuing under one profile
    est: EstConfig = EstConfig()
    # the operator console (`mtlskit ca console`): who may use it
    console: ConsoleConfig = ConsoleConfig()

    @field_validator("provisioners")
    @classmethod
    def _unique_names(cls, value: list[ProvisionerConfig]) -> list[ProvisionerConfig]:
        names = [entry.name for entry in value]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"provisioner name {name!r} is used twice")
        return value

    @field_validator("database")
    @classmethod
    def _no_password(cls, value: str) -> str:
        _, _, rest = value.partition("://")
        if rest and ":" in rest.split("@", 1)[0] and "@" in rest:
            raise ValueError(
                "holds a password; keep it out of ca.toml (database_password_file, "
                "$MTLSKIT_DB_URL or ~/.pgpass)"
            )
        return value

    @field_validator("default_ttl", "max_ttl", "crl_validity")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("allowed_ids")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for text in value:
            IdentityPattern.parse(text)
        return value

    @field_validator("key_types")
    @classmethod
    def _key_types(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in _KEY_TYPES:
                raise ValueError(f"unknown key type {name!r} (known: {', '.join(_KEY_TYPES)})")
        return value

    def durations(self) -> tuple[dt.timedelta, dt.timedelta, dt.timedelta]:
        """(default TTL, max TTL, CRL validity)."""
        return (
            parse_duration(self.default_ttl),
            parse_duration(self.max_ttl),
            parse_duration(self.crl_validity),
        )

    def approval_rules(self) -> tuple[ApprovalRule, ...]:
        return tuple(
            ApprovalRule(
                ids=tuple(IdentityPattern.parse(text) for text in rule.ids),
                approvers=rule.approvers,
            )
            for rule in self.approval
        )

    def oidc_provisioners(self) -> tuple[OidcProvisioner, ...]:
        return tuple(entry.provisioner() for entry in self.provisioners)

    def est_labels(self) -> dict[str, CertificateProfile]:
        return {label: PROFILES[name] for label, name in self.est.labels.items()}

    def policy(self) -> IdentityPolicy:
        return IdentityPolicy(
            allowed_ids=tuple(IdentityPattern.parse(text) for text in self.allowed_ids),
            max_ttl=parse_duration(self.max_ttl),
            key_types=frozenset(self.key_types),
        )


def parse_ca_config(text: bytes, *, source: str) -> CaConfig:
    """Validate ``ca.toml``; the first problem becomes one ``ConfigError`` naming its key."""
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("is not UTF-8 text", source=source) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"is not valid TOML: {exc}", source=source) from None
    return validate_ca_config(data, source=source)


def validate_ca_config(data: dict[str, object], *, source: str) -> CaConfig:
    """Validate already-parsed settings (``ca init`` options take this path too)."""
    try:
        config = CaConfig.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        if error["type"] == "extra_forbidden":
            raise ConfigError(f"unknown key {key!r}", source=source) from None
        if error["type"] == "missing":
            raise ConfigError(f"missing required key {key!r}", source=source) from None
        message = str(error["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"key {key!r}: {message}", source=source) from None
    except InputError as exc:  # raised inside a validator with its own wording
        raise ConfigError(exc.detail, source=source) from None
    if config.default_ttl and parse_duration(config.default_ttl) > parse_duration(config.max_ttl):
        raise ConfigError(
            f"key 'default_ttl': {config.default_ttl} is longer than max_ttl {config.max_ttl}",
            source=source,
        )
    return config


def render_ca_config(config: CaConfig) -> str:
    """The commented ``ca.toml`` that ``ca init`` writes (TOML strings are JSON-compatible here)."""

    def value(item: object) -> str:
        return json.dumps(item)

    lines = [
        "# mtlskit CA configuration. Unknown keys are an error.",
        f"name = {value(config.name)}",
        "# client-auth: EKU clientAuth only; spiffe: X509-SVID (EKU serverAuth + clientAuth)",
        f"profile = {value(config.profile)}",
    ]
    if config.trust_domain:
        lines.append(f"trust_domain = {value(config.trust_domain)}")
    lines += [
        "# true: issuing.pem/issuing.key sign leaves; false: the root signs them",
        f"intermediate = {'true' if config.intermediate else 'false'}",
        "# lifetimes: 15m, 24h, 7d, 1h30m",
        f"default_ttl = {value(config.default_ttl)}",
        f"max_ttl = {value(config.max_ttl)}",
        f"crl_validity = {value(config.crl_validity)}",
        "# who may get a certificate; '*' = one path segment, '**' = any depth. Empty: nobody.",
        f"allowed_ids = {value(config.allowed_ids)}",
        f"key_types = {value(config.key_types)}",
        "# a CSR's CN or SAN other than the identity issued: ignore = drop and report it",
        "# (the CA sets every name), must_match = refuse the CSR",
        f"csr_names = {value(config.csr_names)}",
        "# a SQLite file relative to this directory, or postgresql://USER@HOST:PORT/DB shared",
        "# by several `ca serve` nodes. Never a password here: see database_password_file,",
        "# $MTLSKIT_DB_URL (overrides this key, whole URL) or ~/.pgpass.",
        f"database = {value(config.database)}",
        "# SQLite: full = fsync per certificate (survives power loss); normal = WAL without it",
        "# (survives a crash of mtlskit, not of the machine; faster). See docs on durability.",
        f"durability = {value(config.durability)}",
        *(
            [f"database_password_file = {value(config.database_password_file)}"]
            if config.database_password_file
            else []
        ),
        "# enrollment tokens for identities matching an [[approval]] rule wait for that many",
        "# distinct approvers (`mtlskit ca requests approve`), e.g.",
        '# [[approval]]\n# ids = ["spiffe://acme.com/prod/**"]\n# approvers = 2',
        "# workloads holding a platform's OIDC/JWT token enroll without a one-time token",
        "# (docs/enroll-oidc.md), e.g.",
        '# [[provisioners]]\n# kind = "oidc"\n# name = "k8s"\n# issuer = "https://kubernetes.default.svc"',
        '# jwks = "k8s-jwks.json"\n# audience = "mtlskit"\n# max_token_age = "1h"',
        '# identity = "spiffe://acme.com/ns/{kubernetes.io.namespace}/sa/{kubernetes.io.serviceaccount.name}"',
        "# EST clients (docs/est.md) may name a label, /.well-known/est/LABEL/simpleenroll,",
        "# that issues under another profile than the one above, e.g.",
        '# [est.labels]\n# svid = "spiffe"',
    ]
    for rule in config.approval:
        lines += ["[[approval]]", f"ids = {value(rule.ids)}", f"approvers = {rule.approvers}"]
    if config.pkcs11 is not None:
        token = config.pkcs11
        lines += [
            "# the CA keys are in this PKCS#11 token (docs/hsm.md); the PIN comes from",
            "# $MTLSKIT_PKCS11_PIN or --passphrase-file, never from this file",
            "[pkcs11]",
            f"module = {value(token.module)}",
            f"root = {value(token.root)}",
            *([f"issuing = {value(token.issuing)}"] if token.issuing else []),
        ]
    lines.append("")
    return "\n".join(lines)
