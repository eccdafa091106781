"""The revisions: ``0001`` … head; each names the ``counters.schema_version`` it sets."""
