"""Configuration generators for the proxies users already run: nginx, HAProxy, Envoy.

Pure: a ``ProxySetup`` in, configuration text out. Each output verifies client
certificates in the handshake (trust, CRL, depth), strips client-sent identity
headers (``mtlskit.forward``'s list), calls ``mtlskit authz-server`` per request
and forwards the identity headers it returns. nginx and HAProxy outputs are
exercised against the real programs in the tests; the Envoy one is checked for
structure only.
"""

from mtlskit.proxyconfig._envoy import envoy_config
from mtlskit.proxyconfig._haproxy import haproxy_config, haproxy_lua
from mtlskit.proxyconfig._nginx import nginx_config
from mtlskit.proxyconfig._setup import Endpoint, ProxySetup, forwarded_names, spoofable_regex

__all__ = [
    "Endpoint",
    "ProxySetup",
    "envoy_config",
    "forwarded_names",
    "haproxy_config",
    "haproxy_lua",
    "nginx_config",
    "spoofable_regex",
]
