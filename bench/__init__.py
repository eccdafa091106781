"""mtlskit's benchmarks: each module measures one feature beside a real peer in the same run.

A benchmark module defines ``run(quick: bool) -> Section``; ``python -m bench``
runs them all and writes ``docs/benchmarks.md`` (plots go to ``docs/img/``).
"""
