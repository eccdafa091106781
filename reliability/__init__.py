"""Reliability and security runs (issue 11): crashes, concurrency, hostile clients, fuzzing.

``python -m reliability`` runs every part and writes ``docs/reliability.md``;
``--quick`` is the CI form (smaller counts, a few minutes) and writes
``reliability/out/reliability.md`` so CI never overwrites the published figures.
Everything listens on 127.0.0.1 only and every loop is bounded in count and time.
"""
