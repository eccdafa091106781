"""Schemathesis hooks for tests/test_caserver_fuzz.py (loaded by SCHEMATHESIS_HOOKS).

EST requests are ``application/pkcs10`` (RFC 7030 §4.2.1), a media type schemathesis
has no serializer for; its body is opaque bytes on the wire, as octet-stream is.
"""

import schemathesis

schemathesis.serializer.alias("application/pkcs10", "application/octet-stream")
