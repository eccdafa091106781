"""The authorization policy (DESIGN.md §6): default deny, allow rules, enforce or shadow.

``Policy.from_toml`` validates the file with pydantic (an unknown key is a
``ConfigError`` that names it) and compiles it into a ``RuleIndex``. A policy is
itself an authorizer: ``policy.authorize(decision)`` returns the decision with
the rule that allowed it, or a rejection saying that nothing did. The small
constructors below (``authorize_id``, ``authorize_member_of``, ...) build
one-rule policies, the way go-spiffe's ``tlsconfig.AuthorizeID`` and friends do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from mtlskit.authz._rules import Route, Rule, RuleIndex, RuleKind, id_fits
from mtlskit.errors import ConfigError
from mtlskit.identity import TrustDomain
from mtlskit.tomlconfig import config_error, parse_toml
from mtlskit.verify import Code, Decision, Reason, Verdict

__all__ = [
    "Mode",
    "Policy",
    "authorize_any",
    "authorize_fingerprint",
    "authorize_id",
    "authorize_matching",
    "authorize_member_of",
    "authorize_one_of",
]


class Mode(StrEnum):
    ENFORCE = "enforce"
    SHADOW = "shadow"  # decide and report, never deny


class _AllowModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = None
    trust_domain: str | None = None
    dns: str | None = None
    email: str | None = None
    fingerprint: str | None = None
    routes: list[str] = []

    @model_validator(mode="after")
    def _one_matcher(self) -> _AllowModel:
        given = [kind.value for kind in RuleKind if getattr(self, kind.value) is not None]
        if len(given) != 1:
            keys = ", ".join(kind.value for kind in RuleKind)
            raise ValueError(f"needs exactly one of {keys}; got {', '.join(given) or 'none'}")
        return self


class _PolicyModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["enforce", "shadow"] = "enforce"
    allow: list[_AllowModel] = []


_ACCEPT: Final = Verdict.ACCEPT


class Policy:
    """A compiled policy; immutable, shared by every connection. Build with a ``from_*`` method."""

    __slots__ = ("_direct", "_index", "mode", "source")

    def __init__(
        self, rules: Iterable[Rule], *, mode: Mode = Mode.ENFORCE, source: str = ""
    ) -> None:
        self.mode = Mode(mode)
        self.source = source
        self._index = RuleIndex(rules)
        self._direct = self._index.direct

    @classmethod
    def from_toml(cls, text: str | bytes, *, source: str = "<policy>") -> Policy:
        return cls.from_mapping(parse_toml(text, source=source), source=source)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "<policy>") -> Policy:
        try:
            model = _PolicyModel.model_validate(data)
        except ValidationError as exc:
            raise config_error(exc, source=source) from None
        rules = []
        for index, allow in enumerate(model.allow):
            kind = next(kind for kind in RuleKind if getattr(allow, kind.value) is not None)
            try:
                routes = tuple(Route.parse(route) for route in allow.routes)
            except ConfigError as exc:
                raise ConfigError(f"allow[{index}].routes: {exc}", source=source) from None
            rules.append(
                Rule(kind=kind, value=getattr(allow, kind.value), routes=routes, index=index)
            )
        try:
            return cls(rules, mode=Mode(model.mode), source=source)
        except ConfigError as exc:
            raise ConfigError(str(exc), source=source) from None

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self._index.rules

    def match(
        self, decision: Decision, *, method: str | None = None, path: str | None = None
    ) -> Rule | None:
        """The rule that allows this client (and request, if given); see ``RuleIndex.match``."""
        return self._index.match(
            decision.identity, decision.chain[0] if decision.chain else None, method, path
        )

    def authorize(
        self, decision: Decision, *, method: str | None = None, path: str | None = None
    ) -> Decision:
        """Allow with the matching rule named, or deny by default (shadow: report, keep the accept).

        Rejected decisions pass through unchanged: authorization never rescues a
        certificate that failed verification. Without ``method``/``path`` (a
        connection, or ``mtlskit verify``) rules with routes count as matching;
        the gateway passes both for every request.
        """
        if decision.verdict is not _ACCEPT:
            return decision
        identity = decision.identity
        if identity is not None:
            name = self._direct.get(identity.value)
            # the common case: an exact identity rule, no routes, of the identity's SAN type
            if name is not None and id_fits(identity.value, identity.kind):
                return decision.with_rule(name)
        chain = decision.chain
        rule = self._index.match(decision.identity, chain[0] if chain else None, method, path)
        if rule is not None:
            return decision.with_rule(rule.name)
        who = (
            f"{decision.identity.kind.value} {decision.identity.value}"
            if decision.identity
            else f"certificate {decision.chain[0] if decision.chain else '(none)'}"
        )
        request = f" for {method} {path}" if method is not None and path is not None else ""
        message = f"no allow rule matches {who}{request} (default deny)"
        if self.mode is Mode.SHADOW:
            message = f"shadow mode, not enforced: {message}"
        return Decision(
            verdict=Verdict.ACCEPT if self.mode is Mode.SHADOW else Verdict.REJECT,
            identity=decision.identity,
            chain=decision.chain,
            reasons=(*decision.reasons, Reason(code=Code.IDENTITY_NOT_AUTHORIZED, message=message)),
            pinned=decision.pinned,
            valid_until=decision.valid_until,
        )

    __call__ = authorize

    def __repr__(self) -> str:
        return f"Policy({len(self.rules)} rules, mode={self.mode.value}, source={self.source!r})"


class _AnyPolicy(Policy):
    __slots__ = ()

    def match(
        self, decision: Decision, *, method: str | None = None, path: str | None = None
    ) -> Rule | None:
        return _ANY


_ANY = Rule(kind=RuleKind.ID, value="*any*", index=0)


def authorize_any() -> Policy:
    """Every verified client; only sensible where the trust store alone decides."""
    return _AnyPolicy(())


def authorize_id(identity: str) -> Policy:
    return Policy([Rule(kind=RuleKind.ID, value=identity)])


def authorize_one_of(*identities: str) -> Policy:
    return Policy(
        [Rule(kind=RuleKind.ID, value=value, index=i) for i, value in enumerate(identities)]
    )


def authorize_member_of(trust_domain: TrustDomain | str) -> Policy:
    return Policy([Rule(kind=RuleKind.TRUST_DOMAIN, value=str(trust_domain))])


def authorize_matching(pattern: str) -> Policy:
    """``spiffe://acme.com/billing/*`` (one segment) or ``.../billing/**`` (one or more)."""
    return Policy([Rule(kind=RuleKind.ID, value=pattern)])


def authorize_fingerprint(fingerprint: str) -> Policy:
    return Policy([Rule(kind=RuleKind.FINGERPRINT, value=fingerprint)])
