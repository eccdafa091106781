"""Allow rules and their compiled index: who may connect, and to which routes.

Rules are data (``Rule``); ``RuleIndex`` answers "which rules match this client"
through hash maps (exact identity, trust domain, DNS name, email, fingerprint)
and a trie of path segments for ``*``/``**`` patterns, so 100,000 rules cost the
same per decision as ten. The first matching rule in file order wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from mtlskit.certs import Fingerprint
from mtlskit.errors import ConfigError, InputError
from mtlskit.identity import ClientIdentity, IdentityKind, SpiffeId, SpiffeIdError, TrustDomain

__all__ = ["Route", "Rule", "RuleIndex", "RuleKind"]

_PATH_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")


class RuleKind(StrEnum):
    """What a rule compares; the TOML key of the same name."""

    ID = "id"
    TRUST_DOMAIN = "trust_domain"
    DNS = "dns"
    EMAIL = "email"
    FINGERPRINT = "fingerprint"


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """``METHOD /prefix``: a method (``*`` = any) and a path prefix on segment boundaries.

    ``/invoices`` matches ``/invoices`` and ``/invoices/7`` but not ``/invoices-old``;
    a prefix ending in ``/`` matches anything below it. Paths with ``.`` or ``..``
    segments never match: the gateway normalizes paths, and a rule must not be
    reachable by traversal if it does not.
    """

    method: str
    prefix: str

    @classmethod
    def parse(cls, text: str) -> Route:
        parts = text.split()
        if len(parts) != 2 or not parts[1].startswith("/"):
            raise ConfigError(f'route {text!r} must be "METHOD /path-prefix", e.g. "GET /invoices"')
        method = parts[0].upper()
        if method != "*" and not method.isalpha():
            raise ConfigError(f"route {text!r}: {parts[0]!r} is not an HTTP method")
        return cls(method=method, prefix=parts[1])

    def matches(self, method: str, path: str) -> bool:
        if self.method not in {"*", method.upper()}:
            return False
        path = path.split("?", 1)[0]
        if "/./" in f"{path}/" or "/../" in f"{path}/":
            return False
        if self.prefix.endswith("/"):
            return path.startswith(self.prefix)
        return path == self.prefix or path.startswith(f"{self.prefix}/")

    def __str__(self) -> str:
        return f"{self.method} {self.prefix}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """One ``[[allow]]`` entry: what it matches, optional routes, its place in the file."""

    kind: RuleKind
    value: str
    routes: tuple[Route, ...] = ()
    index: int = 0
    # How decisions and logs refer to it: ``allow[3] id = "spiffe://acme.com/billing/*"``.
    name: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        routes = f" routes = [{', '.join(str(r) for r in self.routes)}]" if self.routes else ""
        name = f'allow[{self.index}] {self.kind.value} = "{self.value}"{routes}'
        object.__setattr__(self, "name", name)

    def permits(self, method: str | None, path: str | None) -> bool:
        """Route check; with no request (a connection, or ``verify``) a route rule applies."""
        if not self.routes or method is None or path is None:
            return True
        return any(route.matches(method, path) for route in self.routes)

    @property
    def is_pattern(self) -> bool:
        return self.kind is RuleKind.ID and "*" in self.value


@dataclass(slots=True)
class _Node:
    """A trie node: one path segment deeper per level."""

    children: dict[str, _Node] = field(default_factory=dict)
    star: _Node | None = None  # `*`: exactly one segment
    globstar: list[Rule] = field(default_factory=list)  # `**`: one or more segments
    rules: list[Rule] = field(default_factory=list)  # the pattern ends here


def _split(uri: str) -> tuple[str, list[str]] | None:
    """``scheme://authority`` and the path segments, or ``None`` for a non-URI."""
    scheme_end = uri.find("://")
    if scheme_end < 0:
        return None
    slash = uri.find("/", scheme_end + 3)
    if slash < 0:
        return uri, []
    return uri[:slash], uri[slash + 1 :].split("/")


def _normalize_email(value: str) -> str:
    local, at, domain = value.rpartition("@")
    return f"{local}@{domain.lower()}" if at else value


class RuleIndex:
    """Every rule of a policy, indexed for lookup; immutable once built."""

    __slots__ = (
        "_dns",
        "_domains",
        "_email",
        "_exact",
        "_fingerprints",
        "_trie",
        "direct",
        "rules",
    )

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self._exact: dict[str, list[Rule]] = {}
        self._domains: dict[str, list[Rule]] = {}
        self._dns: dict[str, list[Rule]] = {}
        self._email: dict[str, list[Rule]] = {}
        self._fingerprints: dict[bytes, list[Rule]] = {}
        self._trie: dict[str, _Node] = {}
        for rule in self.rules:
            self._add(rule)
        # identity -> the name of its exact rule without routes: what ``match`` would name
        # whenever no fingerprint rule can come first, in one dict lookup.
        self.direct: dict[str, str] = (
            {}
            if self._fingerprints
            else {
                value: rules[0].name for value, rules in self._exact.items() if not rules[0].routes
            }
        )

    def _add(self, rule: Rule) -> None:
        kind, value = rule.kind, rule.value
        if kind is RuleKind.ID:
            if rule.is_pattern:
                self._add_pattern(rule)
                return
            if value.startswith("spiffe://"):
                _spiffe(value, rule)
            self._exact.setdefault(value, []).append(rule)
        elif kind is RuleKind.TRUST_DOMAIN:
            try:
                domain = TrustDomain.parse(value)
            except SpiffeIdError as exc:
                raise ConfigError(f"{rule.name}: {exc}") from None
            self._domains.setdefault(domain.name, []).append(rule)
        elif kind is RuleKind.DNS:
            self._dns.setdefault(value.lower().rstrip("."), []).append(rule)
        elif kind is RuleKind.EMAIL:
            self._email.setdefault(_normalize_email(value), []).append(rule)
        else:
            try:
                digest = Fingerprint.parse(value).digest
            except InputError as exc:
                raise ConfigError(f"{rule.name}: {exc}") from None
            self._fingerprints.setdefault(digest, []).append(rule)

    def _add_pattern(self, rule: Rule) -> None:
        split = _split(rule.value)
        if split is None or not split[1]:
            raise ConfigError(f"{rule.name}: a pattern needs scheme://authority/segments")
        root, segments = split
        if root.startswith("spiffe://"):
            _spiffe(root, rule)
        node = self._trie.setdefault(root, _Node())
        for position, segment in enumerate(segments):
            if segment == "**":
                if position != len(segments) - 1:
                    raise ConfigError(f"{rule.name}: `**` may only be the last segment")
                node.globstar.append(rule)
                return
            if segment == "*":
                node.star = node.star or _Node()
                node = node.star
            elif not segment or "*" in segment or not _PATH_CHARS.issuperset(segment):
                raise ConfigError(
                    f"{rule.name}: segment {segment!r} must be `*`, `**` or a literal path segment"
                )
            else:
                node = node.children.setdefault(segment, _Node())
        node.rules.append(rule)

    def match(
        self,
        identity: ClientIdentity | None,
        fingerprint: Fingerprint | None,
        method: str | None = None,
        path: str | None = None,
    ) -> Rule | None:
        """The most specific rule that allows this client, tier by tier, earliest in file order.

        Tiers: certificate fingerprint, exact identity, DNS name or email, ``*``/``**``
        pattern, trust domain. Every rule is an allow rule, so the order only
        decides which rule the decision names; the most specific is the most useful.
        """
        if fingerprint is not None and self._fingerprints:
            found = _first(self._fingerprints.get(fingerprint.digest), method, path)
            if found is not None:
                return found
        if identity is None:
            return None
        value = identity.value
        kind = identity.kind
        exact = self._exact.get(value)
        if exact is not None and id_fits(value, kind):
            if not exact[0].routes:
                return exact[0]  # the common case, without a call
            found = _first(exact, method, path)
            if found is not None:
                return found
        found = None
        if kind is IdentityKind.DNS and self._dns:
            found = _first(self._dns.get(value.lower().rstrip(".")), method, path)
        elif kind is IdentityKind.EMAIL and self._email:
            found = _first(self._email.get(_normalize_email(value)), method, path)
        if found is not None:
            return found
        if self._trie and (kind is IdentityKind.SPIFFE or kind is IdentityKind.URI):
            split = _split(value)
            root = self._trie.get(split[0]) if split is not None else None
            if root is not None and split is not None and id_fits(split[0], kind):
                patterns: list[Rule] = []
                _walk(root, split[1], 0, patterns)
                if len(patterns) > 1:
                    patterns.sort(key=_by_index)
                found = _first(patterns, method, path)
                if found is not None:
                    return found
        if kind is IdentityKind.SPIFFE and identity.spiffe_id is not None and self._domains:
            return _first(self._domains.get(identity.spiffe_id.trust_domain.name), method, path)
        return None


def id_fits(value: str, kind: IdentityKind) -> bool:
    """An ``id`` rule's text names the SAN type it may match (issue 27 item 2): a
    ``spiffe://`` ID only a URI SAN that parsed as a SPIFFE ID (so verify has bound it to
    its trust domain's bundle, as go-spiffe's AuthorizeID), another URI only a URI SAN,
    anything else only a DNS, email or CN identity. Without this a partner CA's
    ``DNS:spiffe://acme.com/admin`` matched ``id = "spiffe://acme.com/admin"``."""
    if value.startswith("spiffe://"):
        return kind is IdentityKind.SPIFFE
    if ":" in value:
        return kind is IdentityKind.URI
    return kind is not IdentityKind.SPIFFE and kind is not IdentityKind.URI


def _by_index(rule: Rule) -> int:
    return rule.index


def _first(rules: list[Rule] | None, method: str | None, path: str | None) -> Rule | None:
    """Rules of one key are kept in file order; the first whose routes allow the request."""
    if not rules:
        return None
    for rule in rules:
        if not rule.routes or rule.permits(method, path):
            return rule
    return None


def _walk(node: _Node, segments: Sequence[str], position: int, found: list[Rule]) -> None:
    """Visit each trie node at most once (it is a tree), so cost is bounded by the ID's depth."""
    remaining = len(segments) - position
    if node.globstar and remaining > 0:
        found += node.globstar
    if remaining == 0:
        found += node.rules
        return
    child = node.children.get(segments[position])
    if child is not None:
        _walk(child, segments, position + 1, found)
    if node.star is not None:
        _walk(node.star, segments, position + 1, found)


def _spiffe(value: str, rule: Rule) -> None:
    try:
        if "/" in value[len("spiffe://") :]:
            SpiffeId.parse(value)
        else:
            TrustDomain.parse(value)
    except SpiffeIdError as exc:
        raise ConfigError(f"{rule.name}: {exc}") from None
