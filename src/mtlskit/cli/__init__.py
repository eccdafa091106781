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
    """Imports a command's module only when that command runs: fast start, isolated failures."""

    lazy: dict[str, str] = {}  # noqa: RUF012 - filled once below, read-only afterwards

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy and name not in self.commands:
            module = importlib.import_module(self.lazy[name])
            self.add_command(module.command, name)
        return super().get_command(ctx, name)


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="mtlskit")
def cli() -> None:
    """Client-certificate authentication for mTLS: inspect, lint, issue, verify, authorize."""


_LazyGroup.lazy = {
    "audit": "mtlskit.cli.audit",
    "authz-server": "mtlskit.cli.authz_server",
    "ca": "mtlskit.cli.ca",
    "config": "mtlskit.cli.config",
    "demo": "mtlskit.cli.demo",
    "enroll": "mtlskit.cli.enroll",
    "gateway": "mtlskit.cli.gateway",
    "export": "mtlskit.cli.export",
    "inspect": "mtlskit.cli.inspect",
    "lint": "mtlskit.cli.lint",
    "probe": "mtlskit.cli.probe",
    "renew": "mtlskit.cli.renew",
    "selfsigned": "mtlskit.cli.selfsigned",
    "serve": "mtlskit.cli.serve",
    "survey": "mtlskit.cli.survey",
    "verify": "mtlskit.cli.verify",
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
