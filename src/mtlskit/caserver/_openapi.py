"""The CA server's OpenAPI 3.1 document: the contract ``ca serve`` implements.

Data, served at ``/openapi.json``; tests check that every route of the app is in it
and that a schema-driven fuzzer (schemathesis) finds no server error against it.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["ERROR_CODES", "openapi_document"]

# Stable: clients act on these; new ones may be added, none changes meaning.
ERROR_CODES: Final = (
    "request_invalid",
    "request_too_large",
    "csr_invalid",
    "token_invalid",
    "token_used",
    "token_expired",
    "identity_mismatch",
    "issuance_refused",
    "approval_pending",
    "request_unknown",
    "request_denied",
    "client_cert_required",
    "cert_unknown",
    "cert_revoked",
    "cert_expired",
    "rate_limited",
    "not_found",
    "method_not_allowed",
    "no_trust_domain",
    "store_unavailable",
    "key_unavailable",
    "config_invalid",
    "internal_error",
    # enrollment with a workload-identity token ([[provisioners]], docs/enroll-oidc.md)
    "token_signature_invalid",
    "token_audience_mismatch",
    "token_not_yet_valid",
    "token_replayed",
    "token_issuer_unknown",
    "token_issuer_unavailable",
    "claims_not_allowed",
    "template_value_invalid",
    # EST only (docs/est.md): a /.well-known/est/LABEL/ that ca.toml's [est.labels] lacks
    "est_label_unknown",
)


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def openapi_document(*, title: str) -> dict[str, Any]:
    """The document for one CA (its name in the title)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": "1",
            "description": "mtlskit CA: enrollment with one-time tokens and an approval queue, "
            "renewal over mTLS, CRL and trust bundle, and EST (RFC 7030) under "
            "/.well-known/est/. Errors are JSON with a stable `code`; EST's are text/plain "
            "`code: message` (RFC 7030 4.2.3) with the same codes.",
        },
        "paths": {
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "Readiness: the CA's database answers a ping.",
                    "responses": {
                        "200": _json("The CA and its database are up.", "Health"),
                        "503": _json("The database does not answer; take this node out.", "Health"),
                    },
                }
            },
            "/v1/enroll": {
                "post": {
                    "operationId": "enroll",
                    "summary": "Redeem a one-time token (or a workload-identity id_token) "
                    "and a CSR for a certificate.",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/EnrollRequest"}
                            }
                        },
                    },
                    "responses": {
                        "503": _error("The CA's database is unavailable; retry later."),
                        "201": _json("Issued.", "Issued"),
                        "202": _json("Waiting for approval; poll the request.", "Pending"),
                        "400": _error("Malformed JSON, fields or CSR."),
                        "401": _error("Token unknown or expired."),
                        "403": _error("Identity mismatch or refused by the CA's policy."),
                        "409": _error("Token already used."),
                        "413": _error("Request body too large."),
                        "429": _error("Too many failed token attempts from this address."),
                    },
                }
            },
            "/v1/requests/{request_id}": {
                "get": {
                    "operationId": "getRequest",
                    "summary": "Poll an enrollment request that needed approval.",
                    "parameters": [
                        {
                            "name": "request_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "503": _error("The CA's database is unavailable; retry later."),
                        "200": _json("Approved and issued.", "Issued"),
                        "202": _json("Still waiting for approvers.", "Pending"),
                        "403": _error("Denied."),
                        "404": _error("No such request."),
                    },
                }
            },
            "/v1/renew": {
                "post": {
                    "operationId": "renew",
                    "summary": "Renew the certificate presented in the TLS handshake "
                    "(proof of possession); same identity, new serial. A CSR re-keys.",
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/RenewRequest"}
                            }
                        },
                    },
                    "responses": {
                        "503": _error("The CA's database is unavailable; retry later."),
                        "201": _json("Issued.", "Issued"),
                        "400": _error("Malformed JSON or CSR."),
                        "401": _error("No client certificate was presented."),
                        "403": _error("Certificate revoked, unknown, or refused by policy."),
                        "413": _error("Request body too large."),
                    },
                }
            },
            "/v1/crl": {
                "get": {
                    "operationId": "crl",
                    "summary": "The issuing CA's current CRL (DER).",
                    "responses": {
                        "503": _error("The CA's database is unavailable; retry later."),
                        "200": {
                            "description": "CRL",
                            "content": {"application/pkix-crl": {"schema": {}}},
                        },
                    },
                }
            },
            "/v1/bundle": {
                "get": {
                    "operationId": "bundle",
                    "summary": "The trust anchor: PEM, or a SPIFFE bundle (JWK Set).",
                    "parameters": [
                        {
                            "name": "format",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "enum": ["pem", "spiffe"]},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "The bundle.",
                            "content": {
                                "application/x-pem-file": {"schema": {"type": "string"}},
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/SpiffeBundle"}
                                },
                            },
                        },
                        "400": _error("Unknown format."),
                        "404": _error("SPIFFE format asked of a CA without a trust domain."),
                    },
                }
            },
            **_est_paths(),
        },
        "components": {
            "securitySchemes": {
                "estBasic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "any user name; the password is a one-time token",
                },
                "estBearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a one-time token or a workload-identity JWT",
                },
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string", "enum": list(ERROR_CODES)},
                        "message": {"type": "string"},
                    },
                },
                "Health": {
                    "type": "object",
                    "required": ["status", "database"],
                    "properties": {
                        "status": {"enum": ["ok", "unavailable"]},
                        "ca": {"type": "string"},
                        "database": {
                            "type": "object",
                            "required": ["ok", "backend"],
                            "properties": {
                                "ok": {"type": "boolean"},
                                "backend": {"enum": ["sqlite", "postgresql"]},
                                "ping_ms": {"type": "number"},
                                "error": {"type": "string"},
                            },
                        },
                    },
                },
                "EnrollRequest": {
                    "type": "object",
                    "required": ["csr"],
                    "properties": {
                        "token": {"type": "string", "description": "mtk1_… from `ca token`"},
                        "id_token": {
                            "type": "string",
                            "description": "a workload-identity JWT for a [[provisioners]] "
                            "entry, instead of token",
                        },
                        "csr": {"type": "string", "description": "PKCS#10 CSR, PEM"},
                    },
                },
                "RenewRequest": {
                    "type": "object",
                    "properties": {
                        "csr": {"type": "string", "description": "PEM; omit to keep the key"}
                    },
                },
                "Issued": {
                    "type": "object",
                    "required": ["status", "serial", "identity", "certificate", "chain", "ca"],
                    "properties": {
                        "status": {"const": "issued"},
                        "serial": {"type": "string"},
                        "identity": {"type": "string"},
                        "not_after": {"type": "string", "format": "date-time"},
                        "certificate": {"type": "string", "description": "the leaf, PEM"},
                        "chain": {"type": "string", "description": "leaf + intermediates, PEM"},
                        "ca": {"type": "string", "description": "the root, PEM"},
                        "dropped": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "what the CSR asked for that the CA ignored "
                            "(a subject CN, a SAN other than the identity, extensions)",
                        },
                    },
                },
                "Pending": {
                    "type": "object",
                    "required": ["status", "code", "request_id"],
                    "properties": {
                        "status": {"const": "pending"},
                        "code": {"const": "approval_pending"},
                        "request_id": {"type": "string"},
                        "approvals": {"type": "integer"},
                        "required": {"type": "integer"},
                        "csr_sha256": {"type": "string"},
                    },
                },
                "SpiffeBundle": {
                    "type": "object",
                    "required": ["keys"],
                    "properties": {
                        "keys": {"type": "array", "items": {"type": "object"}},
                        "spiffe_sequence": {"type": "integer"},
                        "spiffe_refresh_hint": {"type": "integer"},
                    },
                },
            },
        },
    }


# RFC 7030 (docs/est.md): bodies are base64 (Content-Transfer-Encoding: base64), refusals
# text/plain "code: message" with the codes above; a lost database is the JSON 503.
_CERTS_ONLY: Final = {"application/pkcs7-mime": {"schema": {"type": "string"}}}
_TEXT: Final = {"text/plain": {"schema": {"type": "string"}}}
_PKCS10: Final = {
    "required": True,
    "content": {"application/pkcs10": {"schema": {"type": "string", "format": "binary"}}},
}


def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": _TEXT}


def _est_enroll(operation: str, summary: str, *, renew: bool) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {"description": "Issued: certs-only PKCS#7 of the new certificate.",
                "content": _CERTS_ONLY},
        "400": _text("Malformed base64 or PKCS#10, or Authorization header."),
        "401": _text("No client certificate." if renew else "No or unknown token."),
        "403": _text("Identity mismatch, revoked or refused by the CA's policy."),
        "413": _text("Request body too large."),
        "415": _text("Content-Type is not application/pkcs10."),
        "503": {
            "description": "The CA's database, key or token issuer is unavailable.",
            "content": {**_TEXT, **_error("")["content"]},
        },
    }  # fmt: skip
    if not renew:
        responses["202"] = {
            "description": "Waiting for approval; send the same CSR again after Retry-After.",
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
            "content": _TEXT,
        }
        responses["409"] = _text("Token already used (or jti replayed).")
        responses["429"] = _text("Too many failed token attempts from this address.")
    post = {"operationId": operation, "summary": summary, "requestBody": _PKCS10,
            "responses": responses}  # fmt: skip
    if not renew:
        post["security"] = [{"estBasic": []}, {"estBearer": []}]
    return {"post": post}


def _est_paths() -> dict[str, Any]:
    """The unlabelled EST paths and their ``/.well-known/est/{label}/`` twins (§3.2.2)."""
    paths = _est_unlabelled()
    label = {"name": "label", "in": "path", "required": True, "schema": {"type": "string"},
             "description": "A label of ca.toml's [est.labels]: its profile issues."}  # fmt: skip
    for path, item in list(paths.items()):
        twin: dict[str, Any] = {}
        for method, operation in item.items():
            unknown = _text("est_label_unknown: no such label.")
            responses = {**operation["responses"], "404": unknown}
            twin[method] = {**operation, "operationId": operation["operationId"] + "Labelled",
                            "parameters": [label], "responses": responses}  # fmt: skip
        paths[path.replace("/est/", "/est/{label}/")] = twin
    return paths


def _est_unlabelled() -> dict[str, Any]:
    return {
        "/.well-known/est/cacerts": {
            "get": {
                "operationId": "estCacerts",
                "summary": "EST: the issuing chain and root as certs-only PKCS#7 (RFC 7030 4.1).",
                "responses": {"200": {"description": "The CA certificates.",
                                      "content": _CERTS_ONLY}},
            }
        },
        "/.well-known/est/csrattrs": {
            "get": {
                "operationId": "estCsrattrs",
                "summary": "EST: the CSR attributes asked for, base64 DER CsrAttrs (4.5, "
                           "RFC 8951 4): the key's curve when ca.toml accepts only one, "
                           "else an empty SEQUENCE; the CA decides every name.",
                "responses": {"200": {"description": "CsrAttrs.", "content": {
                    "application/csrattrs": {"schema": {"type": "string"}}}}},
            }
        },
        "/.well-known/est/simpleenroll": _est_enroll(
            "estSimpleenroll",
            "EST: enroll with HTTP Basic (password = one-time token) or Bearer (one-time or "
            "workload-identity token) and a base64 PKCS#10 (4.2.1).",
            renew=False,
        ),
        "/.well-known/est/simplereenroll": _est_enroll(
            "estSimplereenroll",
            "EST: re-enroll as the certificate of the TLS handshake; the CSR may bring a new "
            "key (4.2.2).",
            renew=True,
        ),
    }  # fmt: skip
