"""``mtlskit verify CERT``: would this client certificate be accepted, and if not, why not?

Reads the files named on the command line (through ``mtlskit.trustfiles``, as
``authz-server`` does), builds a ``TrustStore`` and a ``Verifier`` (and a
``Policy`` with ``--policy``), and prints the ``Decision``.
Exit 0 accept, 1 reject, 2 unusable input.
"""

from __future__ import annotations

import datetime as dt
import json

import click

from mtlskit.cli._inputs import read_certificates
from mtlskit.cli._output import echo_lines, one_line, rich_output
from mtlskit.errors import InputError
from mtlskit.trustfiles import TrustFiles, read_policy
from mtlskit.verify import NO_INTERMEDIATE, Decision, Verifier


def _parse_at(text: str | None) -> dt.datetime:
    if text is None:
        return dt.datetime.now(dt.UTC)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(
            f"--at {text!r} is not an ISO 8601 time (e.g. 2026-07-01T12:00:00Z)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _bundles(specs: tuple[str, ...]) -> dict[str, list[str]]:
    bundles: dict[str, list[str]] = {}
    for spec in specs:
        domain, sep, path = spec.partition("=")
        if not sep or not domain or not path:
            raise InputError(f"--spiffe-bundle {spec!r} must be TRUST_DOMAIN=FILE")
        bundles.setdefault(domain, []).append(path)
    return bundles


def _lines(decision: Decision) -> list[str]:
    """The verdict line, then one line per reason: ``x CODE (depth N): MESSAGE [peers' codes]``."""
    head = decision.verdict.value.upper()
    if decision.identity is not None:
        head += f"  {decision.identity.kind.value}: {one_line(decision.identity.value)}"
    lines = [head]
    if decision.rule:
        lines.append(f"allowed by {one_line(decision.rule)}")
    if decision.pinned:
        lines.append("matched a pinned certificate (SHA-256 fingerprint)")
    mark = "!" if decision.accepted else "x"
    for reason in decision.reasons:
        where = "" if reason.depth is None else f" (depth {reason.depth})"
        lines.append(
            f"{mark} {reason.code.value}{where}: {one_line(reason.message)} "
            f"[GCP client_cert_error: {reason.gcp_error}; "
            f"AWS tls_verify_status: Failed:{reason.aws_tls_verify_status}]"
        )
    if decision.chain:
        lines.append("Chain (leaf first):")
        lines += [f"  [{depth}] {print_}" for depth, print_ in enumerate(decision.chain)]
    if decision.valid_until is not None and decision.accepted:
        lines.append(f"verdict holds until {decision.valid_until.isoformat()}")
    return lines


def _render(decision: Decision) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console()
    style = "bold green" if decision.accepted else "bold red"
    console.print(f"[{style}]{decision.verdict.value.upper()}[/{style}]", end="")
    if decision.identity is not None:
        identity = escape(decision.identity.value)
        console.print(f"  {decision.identity.kind.value}: {identity}", end="")
    console.print()
    if decision.rule:
        console.print(f"allowed by {escape(decision.rule)}")
    if decision.pinned:
        console.print("matched a pinned certificate (SHA-256 fingerprint)")
    for reason in decision.reasons:
        where = "" if reason.depth is None else f" (depth {reason.depth})"
        mark = "[yellow]![/yellow]" if decision.accepted else "[red]x[/red]"
        console.print(f"{mark} [bold]{reason.code.value}[/bold]{where}")
        console.print(f"    {escape(reason.message)}", highlight=False)
        console.print(
            f"    [dim]GCP client_cert_error: {reason.gcp_error} · "
            f"AWS tls_verify_status: Failed:{reason.aws_tls_verify_status}[/dim]"
        )
    if decision.chain:
        console.print("Chain (leaf first):")
        for depth, fingerprint in enumerate(decision.chain):
            console.print(f"  [{depth}] {fingerprint}")
    if decision.valid_until is not None and decision.accepted:
        console.print(f"verdict holds until {decision.valid_until.isoformat()}")


@click.command("verify")
@click.argument("cert", type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "--chain",
    "chain_file",
    type=click.Path(dir_okay=False, path_type=str),
    help="Intermediates the client would send, if not already in CERT.",
)
@click.option(
    "--trust",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=str),
    help="CA certificates to trust (PEM/DER); repeatable.",
)
@click.option(
    "--pin",
    multiple=True,
    metavar="sha256:HEX|FILE",
    help="Accept exactly this self-signed client certificate (its fingerprint or its file); "
    "repeatable.",
)
@click.option(
    "--spiffe-bundle",
    "spiffe_bundles",
    multiple=True,
    metavar="TRUST_DOMAIN=FILE",
    help="CA bundle (PEM or SPIFFE JSON) that alone may vouch for one trust domain.",
)
@click.option(
    "--crl",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=str),
    help="Certificate revocation list (PEM/DER); repeatable.",
)
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(dir_okay=False, path_type=str),
    help="Authorization policy (TOML); without it every verified client is allowed.",
)
@click.option("--at", "at_text", metavar="ISO8601", help="Verify as of this time (default: now).")
@click.option(
    "--allow-missing-eku",
    is_flag=True,
    help="Accept a leaf without extendedKeyUsage (peers require clientAuth).",
)
@click.option(
    "--allow-stale-crl",
    is_flag=True,
    help="Use CRLs past their nextUpdate instead of failing closed with crl_stale.",
)
@click.option(
    "--max-chain-depth",
    type=click.IntRange(min=0),
    default=8,
    show_default=True,
    help="Most intermediate CAs between leaf and anchor.",
)
@click.option(
    "--allow-public-roots",
    is_flag=True,
    help="DANGEROUS: let publicly trusted roots vouch for clients; requires --policy.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def command(  # click passes every option by keyword
    *,
    cert: str,
    chain_file: str | None,
    trust: tuple[str, ...],
    pin: tuple[str, ...],
    spiffe_bundles: tuple[str, ...],
    crl: tuple[str, ...],
    policy_file: str | None,
    at_text: str | None,
    allow_missing_eku: bool,
    allow_stale_crl: bool,
    max_chain_depth: int,
    allow_public_roots: bool,
    as_json: bool,
) -> int:
    """Verify a client certificate chain as an mTLS server would, and explain the verdict.

    At least one --trust, --pin or --spiffe-bundle is needed; a pin alone is a
    valid trust store. Exit 0 accept, 1 reject, 2 unusable input.

    \b
    Example:
      mtlskit verify client.pem --trust ca/root.pem --policy policy.toml
      mtlskit verify svid.pem --spiffe-bundle acme.com=bundle.json --json
    """
    if not (trust or pin or spiffe_bundles):
        raise click.UsageError("give at least one --trust, --pin or --spiffe-bundle")
    at = _parse_at(at_text)
    chain = read_certificates(cert)
    if chain_file is not None:
        chain += read_certificates(chain_file)
    store = TrustFiles(
        trust=trust,
        pins=pin,
        crls=crl,
        spiffe_bundles=_bundles(spiffe_bundles),
        allow_public_roots=allow_public_roots,
        allow_stale_crls=allow_stale_crl,
    ).load()
    policy = read_policy(policy_file) if policy_file else None
    verifier = Verifier(
        trust=store,
        allow_missing_eku=allow_missing_eku,
        max_chain_depth=max_chain_depth,
        authorize=policy.authorize if policy else None,
    )
    decision = verifier.verify(chain, at=at)
    if as_json:
        click.echo(json.dumps(decision.as_dict(), indent=2))
    elif rich_output():
        _render(decision)
    else:
        echo_lines(_lines(decision))
    if any(reason.message == NO_INTERMEDIATE for reason in decision.reasons):
        # The commonest first failure: cert.pem (leaf only) given where chain.pem belongs.
        click.echo(
            "mtlskit: hint: the issuing CA is missing: pass --chain with it, "
            "or use chain.pem (leaf + issuing CA)",
            err=True,
        )
    return 0 if decision.accepted else 1
