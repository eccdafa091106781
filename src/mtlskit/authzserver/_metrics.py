"""Counters for ``/metrics`` in the Prometheus text format (0.0.4), written by hand.

Six series do not justify a client library; the format is a few lines of text.
Counting reads an ``Answer``, so the metrics and the decision log cannot disagree.
"""

from __future__ import annotations

from collections import Counter
from typing import Final

from mtlskit.authzserver._decide import Answer, Proxy

__all__ = ["Metrics"]

_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


class Metrics:
    """Totals since start; one instance per process, touched from the event loop only."""

    __slots__ = ("_buckets", "_checks", "_codes", "_count", "_sum", "cache_hits", "cache_misses")

    def __init__(self) -> None:
        self._checks: Counter[tuple[str, str]] = Counter()
        self._codes: Counter[str] = Counter()
        self._buckets = [0] * len(_BUCKETS)
        self._count = 0
        self._sum = 0.0
        self.cache_hits = 0
        self.cache_misses = 0

    def count(self, proxy: Proxy, answer: Answer, seconds: float) -> None:
        result = "allow" if answer.allowed else "deny"
        self._checks[(proxy.value, result)] += 1
        for reason in answer.decision.reasons:
            self._codes[reason.code.value] += 1
        if answer.cache_hit is True:
            self.cache_hits += 1
        elif answer.cache_hit is False:
            self.cache_misses += 1
        self._count += 1
        self._sum += seconds
        for index, bound in enumerate(_BUCKETS):
            if seconds <= bound:
                self._buckets[index] += 1

    def render(self, *, trust_generation: int) -> str:
        lines = [
            "# HELP mtlskit_authz_checks_total Check requests answered, by proxy and result.",
            "# TYPE mtlskit_authz_checks_total counter",
        ]
        lines += [
            f'mtlskit_authz_checks_total{{proxy="{proxy}",result="{result}"}} {n}'
            for (proxy, result), n in sorted(self._checks.items())
        ]
        lines += [
            "# HELP mtlskit_authz_reasons_total Reasons recorded in decisions, by stable code.",
            "# TYPE mtlskit_authz_reasons_total counter",
        ]
        lines += [
            f'mtlskit_authz_reasons_total{{code="{code}"}} {n}'
            for code, n in sorted(self._codes.items())
        ]
        lines += [
            "# HELP mtlskit_authz_cache_hits_total Verdicts served from the decision cache.",
            "# TYPE mtlskit_authz_cache_hits_total counter",
            f"mtlskit_authz_cache_hits_total {self.cache_hits}",
            "# HELP mtlskit_authz_cache_misses_total Verdicts computed by the verifier.",
            "# TYPE mtlskit_authz_cache_misses_total counter",
            f"mtlskit_authz_cache_misses_total {self.cache_misses}",
            "# HELP mtlskit_authz_check_seconds Time to decide one check request.",
            "# TYPE mtlskit_authz_check_seconds histogram",
        ]
        lines += [
            f'mtlskit_authz_check_seconds_bucket{{le="{bound}"}} {n}'
            for bound, n in zip(_BUCKETS, self._buckets, strict=True)
        ]
        lines += [
            f'mtlskit_authz_check_seconds_bucket{{le="+Inf"}} {self._count}',
            f"mtlskit_authz_check_seconds_sum {self._sum:.6f}",
            f"mtlskit_authz_check_seconds_count {self._count}",
            "# HELP mtlskit_authz_trust_generation Generation of the trust store in use.",
            "# TYPE mtlskit_authz_trust_generation gauge",
            f"mtlskit_authz_trust_generation {trust_generation}",
        ]
        return "\n".join(lines) + "\n"
