"""The ``mtlskit`` command: one module per command group, nothing but argument handling.

Exit codes (DESIGN.md §5): 0 success or accept, 1 a negative verdict, 2 unusable
input or usage; an ``InputError`` becomes one line on stderr, never a traceback.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Sequence

import click

from mtlskit import __version__
from mtlskit.errors import InputError

__all__ = ["cli", "main"]


class _LazyGroup(click.Group):
    """Imports a command's module only when that command runs: fast start, isolated failures.

    ``lazy`` maps each name to ``"module:attribute"`` and the one-line summary that
    ``mtlskit --help`` lists, so the overview imports no command module at all (it did,
    all sixteen, and took 0.42 s). tests/test_cli_start.py holds every summary to its
    command's own docstring.
    """

    lazy: dict[str, tuple[str, str]] = {}  # noqa: RUF012 - filled once below, read-only afterwards

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy and name not in self.commands:
            module, _, attribute = self.lazy[name][0].partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), name)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            if name in self.commands:  # eagerly registered, or already imported
                command = self.commands[name]
                if command.hidden:
                    continue
                rows.append((name, command.get_short_help_str(limit)))
            else:
                stand_in = click.Command(name, help=self.lazy[name][1])  # click's own truncation
                rows.append((name, stand_in.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """``--version``: mtlskit's, and the two OpenSSL builds it runs on (pyca's and ssl's)."""
    if not value or ctx.resilient_parsing:
        return
    import platform
    import ssl

    import cryptography
    from cryptography.hazmat.backends.openssl import backend

    click.echo(f"mtlskit {__version__}")
    click.echo(f"cryptography {cryptography.__version__} ({backend.openssl_version_text()})")
    click.echo(f"Python {platform.python_version()} ssl ({ssl.OPENSSL_VERSION})")
    ctx.exit(0)


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show mtlskit's, cryptography's and OpenSSL's versions and exit.",
)
def cli() -> None:
    """Client-certificate authentication for mTLS: inspect, lint, issue, verify, authorize."""


# name: ("module:attribute", the summary `mtlskit --help` lists without importing it)
_LazyGroup.lazy = {
    "audit": (
        "mtlskit.cli.audit:command",
        "Audit client-auth trust stores: PEM bundles, directories, or a gateway config file.",
    ),
    "authz-server": (
        "mtlskit.cli.authz_server:command",
        "Answer nginx auth_request, Envoy ext_authz and HAProxy (Lua) checks for client "
        "certificates.",
    ),
    "ca": (
        "mtlskit.cli.ca:command",
        "A private CA that checks identity and decides every attribute itself.",
    ),
    "config": (
        "mtlskit.cli.config:command",
        "Write a configuration for PROXY: client-certificate verification, CRL, verify depth, "
        "header sanitizing, identity forwarding and the call to `mtlskit authz-server`.",
    ),
    "demo": (
        "mtlskit.cli.demo:command",
        "Mint clean and defective client certificates, then inspect and lint each.",
    ),
    "enroll": (
        "mtlskit.cli.enroll:command",
        "Enroll with a CA server: make a key here, redeem a token, write cert/chain/key/ca.pem.",
    ),
    "export": (
        "mtlskit.cli.export:command",
        "Convert issued certificates and keys for other consumers.",
    ),
    "gateway": (
        "mtlskit.cli.gateway:command",
        "Run the mTLS-terminating reverse proxy (uvloop when installed).",
    ),
    "inspect": (
        "mtlskit.cli.inspect:command",
        "Show subject, issuer, validity, key, extensions, SANs, identity and fingerprint.",
    ),
    "lint": (
        "mtlskit.cli.lint:command",
        "Check certificates against client-authentication profiles; exit 1 on any error finding.",
    ),
    "probe": (
        "mtlskit.cli.probe:command",
        "Run an attack battery against HOST:PORT's client-certificate authentication.",
    ),
    "renew": (
        "mtlskit.cli.renew:command",
        "Renew CERT at URL, proving possession of KEY in the TLS handshake.",
    ),
    "selfsigned": (
        "mtlskit.cli.selfsigned:command",
        "Create a key and a self-signed client certificate (client-auth profile).",
    ),
    "serve": (
        "mtlskit.cli.serve:command",
        "Serve the ASGI app APP (package.module:attribute) over mTLS (uvloop when installed).",
    ),
    "survey": (
        "mtlskit.cli.survey:command",
        "Fetch each server's certificate and report its EKUs, issuer, and clientAuth status.",
    ),
    "verify": (
        "mtlskit.cli.verify:command",
        "Verify a client certificate chain as an mTLS server would, and explain the verdict.",
    ),
}


def _register() -> None:
    """Eagerly registered commands (the lazy table above is preferred for new ones)."""
    # -- further command modules register below this line --


_register()


_PARSER_WARNINGS = (
    "Parsed a serial number which wasn't positive",
    "Parsed a negative serial number",  # cryptography < 47's wording
    "PKCS#7 certificates could not be parsed as DER",
    "PKCS#12 bundle could not be parsed as DER",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI in-process and return the exit code (the console script's entry point)."""
    # pyca warns about RFC 5280 violations it still parses (a serial that is not positive,
    # BER where DER belongs); lint reports those instead. Only those: any other warning is a
    # defect that tests/test_cli_stderr.py catches (it runs every command with -W error).
    for tolerated in _PARSER_WARNINGS:
        warnings.filterwarnings("ignore", message=tolerated)
    try:
        result = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="mtlskit",
            standalone_mode=False,
        )
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.UsageError as exc:  # one line, like every other unusable input
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        click.echo(f"mtlskit: error: {exc.format_message()}{hint}", err=True)
        return 2
    except click.ClickException as exc:
        exc.show()
        return 2 if exc.exit_code == 2 else exc.exit_code
    except click.exceptions.Abort:
        click.echo("mtlskit: aborted", err=True)
        return 2
    except InputError as exc:
        click.echo(f"mtlskit: error: {exc}", err=True)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return 0
    return result if isinstance(result, int) else 0
