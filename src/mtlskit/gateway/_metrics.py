"""Prometheus metrics in the plain-text exposition format (0.0.4), no client library needed.

Counters are dicts keyed by label values, touched only from the event loop, so
no locks; ``render`` writes them in the text format Prometheus scrapes.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable
from typing import Any, Final

__all__ = ["Metrics", "metrics_response"]

_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_FOLD_AT: Final = 4096  # observations kept as a list before they are counted


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """The gateway's counters, gauges and one latency histogram."""

    def __init__(self) -> None:
        self.handshakes: Counter[tuple[str, str]] = Counter()  # (outcome, code)
        self._requests: Counter[int] = Counter()  # status
        self._buckets = [0] * (len(_BUCKETS) + 1)
        self._sum = 0.0
        self._count = 0
        # Per request only an append: counted in one loop when read or when long (a
        # Counter update and a bisect per request were ~2 µs of a relayed request).
        self._statuses: list[int] = []
        self._latencies: list[float] = []
        self.open_connections = 0
        self.reloads: Counter[str] = Counter()  # ok / failed

    def handshake(self, outcome: str, code: str = "") -> None:
        self.handshakes[(outcome, code)] += 1

    def request(self, status: int) -> None:
        statuses = self._statuses
        statuses.append(status)
        if len(statuses) >= _FOLD_AT:
            self._fold()

    def upstream_latency(self, seconds: float) -> None:
        latencies = self._latencies
        latencies.append(seconds)
        if len(latencies) >= _FOLD_AT:
            self._fold()

    def _fold(self) -> None:
        statuses, self._statuses = self._statuses, []
        self._requests.update(statuses)
        latencies, self._latencies = self._latencies, []
        buckets = self._buckets
        for seconds in latencies:
            buckets[bisect.bisect_left(_BUCKETS, seconds)] += 1
        self._sum += sum(latencies)
        self._count += len(latencies)

    @property
    def requests(self) -> Counter[int]:
        """Responses by status so far."""
        self._fold()
        return self._requests

    def snapshot(self) -> dict[str, Any]:
        """Every counter and gauge as JSON data: what a worker tells the master (``_workers``)."""
        self._fold()
        return {
            "handshakes": [[outcome, code, n] for (outcome, code), n in self.handshakes.items()],
            "requests": [[status, n] for status, n in self._requests.items()],
            "buckets": self._buckets,
            "sum": self._sum,
            "count": self._count,
            "open_connections": self.open_connections,
            "reloads": dict(self.reloads),
        }

    def add(self, snapshot: dict[str, Any], *, gauges: bool = True) -> None:
        """Count a ``snapshot`` in (the master's sum over workers); ``gauges``: the open
        connections too (not for a worker that has exited)."""
        for outcome, code, n in snapshot["handshakes"]:
            self.handshakes[(outcome, code)] += n
        for status, n in snapshot["requests"]:
            self._requests[status] += n
        for i, n in enumerate(snapshot["buckets"]):
            self._buckets[i] += n
        self._sum += snapshot["sum"]
        self._count += snapshot["count"]
        if gauges:
            self.open_connections += snapshot["open_connections"]
        self.reloads.update(snapshot["reloads"])

    def render(self) -> bytes:
        self._fold()
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
            for status, count in sorted(self._requests.items())
        ]
        out += [
            "# HELP mtlskit_gateway_upstream_latency_seconds Time to the upstream response head.",
            "# TYPE mtlskit_gateway_upstream_latency_seconds histogram",
        ]
        running = 0
        for bound, count in zip((*_BUCKETS, float("inf")), self._buckets, strict=True):
            running += count
            label = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'mtlskit_gateway_upstream_latency_seconds_bucket{{le="{label}"}} {running}')
        out.append(f"mtlskit_gateway_upstream_latency_seconds_sum {self._sum}")
        out.append(f"mtlskit_gateway_upstream_latency_seconds_count {self._count}")
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


def metrics_response(request: bytes, metrics: Callable[[], Metrics]) -> bytes:
    """The whole HTTP response to a scrape's request head: ``/metrics`` in the text
    format (``metrics`` is called only then), 404 for any other target."""
    target = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
    if target.split(b"?")[0] == b"/metrics":
        body = metrics().render()
        head = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\n"
    else:
        body = b"not found\n"
        head = b"HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\n"
    return head + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body
