"""Identity headers: what a gateway tells its backend about the client certificate.

Pure: values in, header pairs out; headers in, values out. Writers for Envoy's
XFCC, GCP-style ``X-Client-Cert-*``, AWS ALB-style ``X-Amzn-Mtls-Clientcert*``,
RFC 9440 ``Client-Cert``/``Client-Cert-Chain`` and mtlskit's verdict; one
sanitizer that strips every such header a client sends; readers for each format
plus nginx's escaped PEM, for backends; and the ASGI TLS extension dict.

Headers are ``(name, value)`` byte pairs, as httptools and ASGI carry them.

>>> from mtlskit.testca import LeafSpec, TestCA
>>> leaf = TestCA().issue(LeafSpec(uris=("spiffe://acme.com/billing",)))
>>> client = ForwardedClient.from_chain(leaf.chain[:-1], verified=True)
>>> headers = rewrite_headers([(b"X-SSL-Client-Cert", b"forged")], client, ForwardConfig())
>>> [name for name, _ in headers][:2]
[b'X-Forwarded-Client-Cert', b'X-Client-Cert-Present']
>>> str(read_xfcc(headers).identity)
'spiffe://acme.com/billing'
"""

from mtlskit.forward._asgi import asgi_tls_extension, tls_version_number
from mtlskit.forward._aws import AwsMode, aws_headers, read_aws
from mtlskit.forward._client import ForwardedClient, identity_from_sans
from mtlskit.forward._forward import ForwardConfig, HeaderFormat, forward_headers, rewrite_headers
from mtlskit.forward._gcp import GCP_ERRORS, GcpHeaderNames, gcp_error, gcp_headers, read_gcp
from mtlskit.forward._headers import Headers
from mtlskit.forward._rfc9440 import read_rfc9440, rfc9440_headers
from mtlskit.forward._sanitize import is_spoofable, sanitize_headers
from mtlskit.forward._verdict import read_nginx, read_verdict, verdict_headers
from mtlskit.forward._xfcc import (
    XfccConfig,
    XfccDetail,
    XfccElement,
    XfccMode,
    parse_xfcc,
    read_xfcc,
    xfcc_headers,
    xfcc_value,
)

__all__ = [
    "GCP_ERRORS",
    "AwsMode",
    "ForwardConfig",
    "ForwardedClient",
    "GcpHeaderNames",
    "HeaderFormat",
    "Headers",
    "XfccConfig",
    "XfccDetail",
    "XfccElement",
    "XfccMode",
    "asgi_tls_extension",
    "aws_headers",
    "forward_headers",
    "gcp_error",
    "gcp_headers",
    "identity_from_sans",
    "is_spoofable",
    "parse_xfcc",
    "read_aws",
    "read_gcp",
    "read_nginx",
    "read_rfc9440",
    "read_verdict",
    "read_xfcc",
    "rewrite_headers",
    "rfc9440_headers",
    "sanitize_headers",
    "tls_version_number",
    "verdict_headers",
    "xfcc_headers",
    "xfcc_value",
]
