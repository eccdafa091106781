"""The entry point: a chain, some profiles and an instant in; one report per certificate out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import TypeVar

from cryptography import x509

from mtlskit.lint._finding import CertificateReport, Finding
from mtlskit.lint._profiles import DEFAULT_PROFILE, PROFILES, Profile
from mtlskit.lint._rules import CertRule, ChainRule
from mtlskit.lint._view import CertView, LintContext

__all__ = ["lint_chain", "resolve_profiles"]

_T = TypeVar("_T")


def resolve_profiles(names: Iterable[str | Profile]) -> tuple[Profile, ...]:
    """Profiles by name (or as given); ``ValueError`` names an unknown one and the known ones."""
    resolved: list[Profile] = []
    for item in names:
        if isinstance(item, Profile):
            resolved.append(item)
            continue
        try:
            resolved.append(PROFILES[item])
        except KeyError:
            known = ", ".join(PROFILES)
            raise ValueError(f"unknown lint profile {item!r} (known: {known})") from None
    return tuple(resolved) or (PROFILES[DEFAULT_PROFILE],)


def _unique(rules: Iterable[_T]) -> tuple[_T, ...]:
    """Keep the first of each rule: profiles share rule objects, and a rule reports once."""
    return tuple(dict.fromkeys(rules))


_RuleSets = tuple[tuple[CertRule, ...], tuple[CertRule, ...], tuple[ChainRule, ...]]
# The rule sets of each combination of profiles seen: a CA lints every certificate it
# issues under the same one, and merging them cost a tenth of that lint. Keyed by the
# profiles' ids; the entry holds the profiles, so no id is reused while it is kept.
_MEMO_LIMIT = 64
_RULE_SETS: dict[tuple[int, ...], tuple[tuple[Profile, ...], _RuleSets]] = {}


def _rule_sets(chosen: tuple[Profile, ...]) -> _RuleSets:
    """Leaf, CA and chain rules of ``chosen``, each rule once, in profile order."""
    key = tuple(map(id, chosen))
    kept = _RULE_SETS.get(key)
    if kept is not None:
        return kept[1]
    rule_sets = (
        _unique(rule for p in chosen for rule in p.leaf),
        _unique(rule for p in chosen for rule in p.ca),
        _unique(rule for p in chosen for rule in p.chain),
    )
    if len(_RULE_SETS) >= _MEMO_LIMIT:
        _RULE_SETS.clear()
    _RULE_SETS[key] = (chosen, rule_sets)
    return rule_sets


def lint_chain(
    chain: Sequence[x509.Certificate],
    profiles: Iterable[str | Profile] = (DEFAULT_PROFILE,),
    *,
    at: dt.datetime,
    public_bundle: str | None = None,
    leaf_signature_vouched: bool = False,
) -> list[CertificateReport]:
    """Lint ``chain`` (leaf first) under ``profiles`` at instant ``at`` (timezone-aware).

    Leaf rules run on ``chain[0]``, CA rules on the rest, chain rules across them.
    ``public_bundle`` replaces certifi's roots for the ``public-ca`` profile (tests).
    ``leaf_signature_vouched``: the caller itself signed ``chain[0]`` with the key of
    ``chain[1]`` and has proven that such signatures verify (mtlskit's CA, see
    ``Issuer.leaf_signatures_proven``), so that one signature is not verified again;
    every other rule, the name checks of that link included, runs as always.

    >>> from mtlskit.testca import LeafSpec, TestCA
    >>> leaf = TestCA().issue(LeafSpec(dns=("client.acme.com",)))
    >>> import datetime as dt
    >>> [r.codes for r in lint_chain([leaf.cert], at=dt.datetime.now(dt.UTC))]
    [set()]
    """
    if not chain:
        return []
    if at.tzinfo is None:
        raise ValueError("lint_chain needs a timezone-aware instant")
    leaf_rules, ca_rules, chain_rules = _rule_sets(resolve_profiles(profiles))
    views = tuple(CertView.of(cert, index) for index, cert in enumerate(chain))
    ctx = LintContext(
        views, at=at, public_bundle=public_bundle, leaf_signature_vouched=leaf_signature_vouched
    )
    found: list[list[Finding]] = [[] for _ in views]
    for view in views:
        # CertRule.apply inlined: forty rules a chain, and the call was a tenth of lint.
        readable = view.extensions_error is None
        for rule in leaf_rules if view.index == 0 else ca_rules:
            if readable or not rule.needs_extensions:
                hit = rule.check(view, ctx)
                if hit is not None:
                    found[view.index].append(rule.finding(hit))
    if len(views) > 1 or any(rule.code == "chain_too_deep" for rule in chain_rules):
        for rule in chain_rules:
            for index, finding in rule.apply(ctx):
                found[index].append(finding)
    return [
        CertificateReport(
            index=view.index,
            subject=view.subject,
            findings=tuple(sorted(found[view.index], key=lambda f: f.severity.rank)),
        )
        for view in views
    ]
