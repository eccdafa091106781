"""Prometheus metrics in the plain-text exposition format (0.0.4), no client library needed.

Counters are dicts keyed by label values, touched only from the event loop, so
no locks; ``render`` writes them in the text format Prometheus scrapes.
"""

from __future__ import annotations

import bisect
from collections import Counter
from typing import Final

__all__ = ["Metrics"]

_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """The gateway's counters, gauges and one latency histogram."""

    def __init__(self) -> None:
        self.handshakes: Counter[tuple[str, str]] = Counter()  # (outcome, code)
        self.requests: Counter[int] = Counter()  # status
        self.upstream_buckets = [0] * (len(_BUCKETS) + 1)
        self.upstream_sum = 0.0
        self.upstream_count = 0
        self.open_connections = 0
        self.reloads: Counter[str] = Counter()  # ok / failed

    def handshake(self, outcome: str, code: str = "") -> None:
        self.handshakes[(outcome, code)] += 1

    def request(self, status: int) -> None:
        self.requests[status] += 1

    def upstream_latency(self, seconds: float) -> None:
        self.upstream_buckets[bisect.bisect_left(_BUCKETS, seconds)] += 1
        self.upstream_sum += seconds
        self.upstream_count += 1

    def render(self) -> bytes:
        out = [
            "# HELP mtlskit_gateway_handshakes_total TLS handshakes by outcome and reason code.",
            "# TYPE mtlskit_gateway_handshakes_total counter",
        ]
        for (outcome, code), count in sorted(self.handshakes.items()):
            out.append(
                f'mtlskit_gateway_handshakes_total{{outcome="{_escape(outcome)}",'
                f'code="{_escape(code)}"}} {count}'
            )
        out += [
            "# HELP mtlskit_gateway_requests_total HTTP responses sent, by status.",
            "# TYPE mtlskit_gateway_requests_total counter",
        ]
        out += [
            f'mtlskit_gateway_requests_total{{status="{status}"}} {count}'
            for status, count in sorted(self.requests.items())
        ]
        out += [
            "# HELP mtlskit_gateway_upstream_latency_seconds Time to the upstream response head.",
            "# TYPE mtlskit_gateway_upstream_latency_seconds histogram",
        ]
        running = 0
        for bound, count in zip((*_BUCKETS, float("inf")), self.upstream_buckets, strict=True):
            running += count
            label = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'mtlskit_gateway_upstream_latency_seconds_bucket{{le="{label}"}} {running}')
        out.append(f"mtlskit_gateway_upstream_latency_seconds_sum {self.upstream_sum}")
        out.append(f"mtlskit_gateway_upstream_latency_seconds_count {self.upstream_count}")
        out += [
            "# HELP mtlskit_gateway_open_connections Client connections open now.",
            "# TYPE mtlskit_gateway_open_connections gauge",
            f"mtlskit_gateway_open_connections {self.open_connections}",
            "# HELP mtlskit_gateway_reloads_total Reloads of trust, CRLs, policy and certificate.",
            "# TYPE mtlskit_gateway_reloads_total counter",
        ]
        out += [
            f'mtlskit_gateway_reloads_total{{result="{result}"}} {count}'
            for result, count in sorted(self.reloads.items())
        ]
        return ("\n".join(out) + "\n").encode()
