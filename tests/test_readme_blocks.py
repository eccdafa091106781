"""README.md and docs/*.md run as written: every shell block, in order, in a fresh directory.

The rules, so a reader knows what the test assumes:

- Blocks fenced ```bash, ```sh or ```console are run; ```sh lines are commands (``\\``
  continues a line), in a ```console block the ``$ `` lines are, and the lines under one are
  its expected output (``...`` stands for any text).
- A ```toml or ```python block whose first line is ``# NAME.toml``/``# NAME.py`` is written
  to NAME before the commands run, as a reader saves the config files a page shows.
- ``<!-- not-run: reason -->`` just before a block skips it (counted and printed);
  ``<!-- run: NAME -->`` / ``<!-- file: NAME -->`` blocks belong to tests/test_docs_python.py.
- A ``make`` or ``pip install`` line is skipped: the environment is this .venv.
- Each command must exit 0, or N when its comment ends with ``exit N`` or the console block
  shows ``echo $?`` printing N.
- Servers (``mtlskit gateway``/``serve``/``authz-server``/``ca serve``, ``renew --daemon``)
  and any line ending with `` &`` run in the background; the runner waits for the port
  they listen on, and at the end of the file requires each still running and stops it
  with SIGTERM.

All commands of one file run in one bash, so ``export`` and ``T=$(...)`` carry over.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shlex
import signal
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import require_program

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
MARKER = re.compile(r"^<!-- (not-run|run|file): ?(.*?) -->$")
SKIPPED = re.compile(r"^(make|pip install)\b")
EXPECT_EXIT = re.compile(r"#[^#]*\bexit (\d)\s*$")
SERVERS = re.compile(
    r"^mtlskit (gateway|serve|authz-server|ca serve)\b(?!.*--check)|^mtlskit renew\b.*--daemon"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """One line a reader would type, with what the page says it does."""

    line: int
    text: str
    exit: int = 0
    expect: tuple[str, ...] = ()
    background: bool = False


@dataclass(slots=True, kw_only=True)
class Page:
    """What one markdown file asks a reader to do, in order."""

    steps: list[Command | tuple[str, str]] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)


def _logical_lines(body: list[tuple[int, str]]) -> list[tuple[int, str]]:
    joined: list[tuple[int, str]] = []
    pending = ""
    start = 0
    for number, raw in body:
        if not pending:
            start = number
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        joined.append((start, pending + raw))
        pending = ""
    return joined


def parse(path: Path) -> Page:
    """Split PATH into commands and files to write, honouring the markers above."""
    page = Page()
    lines = path.read_text().splitlines()
    i = 0
    marker: tuple[str, str] | None = None
    while i < len(lines):
        fence = FENCE.match(lines[i])
        found = MARKER.match(lines[i].strip())
        if found:
            marker = (found[1], found[2])
        if not fence or not fence[1]:
            if lines[i].strip() and not found:
                marker = None
            i += 1
            continue
        lang, start = fence[1], i + 1
        i += 1
        while not lines[i].startswith("```"):
            i += 1
        body = [(n + 1, lines[n]) for n in range(start, i)]
        i += 1
        if marker and marker[0] == "not-run":
            page.not_run.append(f"{path.name}:{start}: {marker[1]}")
        elif marker is None:
            _add_block(page, lang, body)
        marker = None
    return page


def _add_block(page: Page, lang: str, body: list[tuple[int, str]]) -> None:
    named = re.match(r"#\s*(\S+\.(?:toml|py))(?:\s|$)", body[0][1]) if body else None
    if lang in ("toml", "python") and named:
        name = named
        page.steps.append((name[1], "\n".join(text for _, text in body) + "\n"))
    elif lang in ("sh", "bash"):
        for number, text in _logical_lines(body):
            if text.strip() and not text.lstrip().startswith("#"):
                page.steps.append(_command(number, text.strip()))
    elif lang == "console":
        for number, text in _logical_lines(body):
            if text.startswith("$ "):
                page.steps.append(_command(number, text[2:].strip()))
            elif page.steps and isinstance(last := page.steps[-1], Command):
                page.steps[-1] = Command(
                    line=last.line,
                    text=last.text,
                    exit=last.exit,
                    expect=(*last.expect, text),
                    background=last.background,
                )
        _echo_status_sets_exit(page)


def _echo_status_sets_exit(page: Page) -> None:
    commands = [s for s in page.steps if isinstance(s, Command)]
    for before, echo in itertools.pairwise(commands):
        if echo.text == "echo $?" and echo.expect:
            index = page.steps.index(before)
            page.steps[index] = Command(
                line=before.line,
                text=before.text,
                exit=int(echo.expect[0]),
                expect=before.expect,
                background=before.background,
            )


def _strip_comment(text: str) -> str:
    """TEXT without its trailing ``# comment`` (outside quotes), so redirections can follow."""
    quote = ""
    for index, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or text[index - 1].isspace()):
            return text[:index].rstrip()
    return text


def _command(number: int, text: str) -> Command:
    expected = EXPECT_EXIT.search(text)
    return Command(
        line=number,
        text=_strip_comment(text),
        exit=int(expected[1]) if expected else 0,
        background=bool(SERVERS.match(text)) or text.endswith(" &"),
    )


def _listen_address(command: str, written: dict[str, str]) -> tuple[str, int] | None:
    """The host and port a server command will answer on, from its flags or its config."""
    words = shlex.split(command, comments=True)
    address = None
    if "--listen" in words:
        address = words[words.index("--listen") + 1]
    elif "--config" in words and (config := written.get(words[words.index("--config") + 1])):
        table = tomllib.loads(config)
        address = table.get("listen", {}).get("address") or table.get("listen")
    if not isinstance(address, str):
        return None
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def script(page: Page, work: Path) -> str:
    """One bash script doing PAGE's steps, leaving each command's status and output in WORK."""
    out = [f"cd {shlex.quote(str(work))}", ": > .pids", ": > .bg"]
    written = dict(step for step in page.steps if isinstance(step, tuple))
    for name, text in written.items():
        out.append(f"cat > {shlex.quote(name)} <<'MTLSKIT_EOF'\n{text}MTLSKIT_EOF")
    for n, step in enumerate(page.steps):
        if isinstance(step, tuple):
            continue
        if SKIPPED.match(step.text):
            out.append(f"echo skipped > .rc.{n}")
            continue
        if step.background:
            command = step.text.removesuffix("&").rstrip()
            out.append(f"{command} > .out.{n} 2>&1 < /dev/null &")
            out.append(f"echo $! >> .pids; echo {n} $! >> .bg; echo 0 > .rc.{n}")
            if address := _listen_address(step.text, written):
                host, port = address
                out.append(
                    f"for _ in $(seq 150); do (: > /dev/tcp/{host}/{port}) 2>/dev/null && break;"
                    f" kill -0 $! 2>/dev/null || break; sleep 0.1; done;"
                    f" (: > /dev/tcp/{host}/{port}) 2>/dev/null || echo down > .rc.{n}"
                )
            continue
        out.append(f"{{ {step.text}\n}} > .out.{n} 2> .err.{n} < /dev/null")
        out.append(f"__rc=$?; echo $__rc > .rc.{n}; (exit $__rc)")
    out.append("while read n pid; do kill -0 $pid 2>/dev/null || echo exited > .rc.$n; done < .bg")
    out.append("for pid in $(cat .pids); do kill -TERM $pid 2>/dev/null; wait $pid; done; true")
    return "\n".join(out) + "\n"


def _matches(expected: tuple[str, ...], actual: str) -> bool:
    position = 0
    for line in expected:
        for fragment in (f.strip() for f in line.split("...")):
            found = actual.find(fragment, position)
            if found < 0:
                return False
            position = found + len(fragment)
    return True


def run_page(path: Path, work: Path) -> tuple[list[str], list[str]]:
    """Run PATH's blocks in WORK; the failures, and the blocks that were not run."""
    page = parse(path)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(work),
    }
    env.pop("MTLSKIT_CA_PASSPHRASE", None)
    proc = subprocess.Popen(
        ["bash", "-c", script(page, work)],
        env=env,
        cwd=work,
        start_new_session=True,
    )
    try:
        proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        pass
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    failures = []
    for n, step in enumerate(page.steps):
        if not isinstance(step, Command):
            continue
        rc_file = work / f".rc.{n}"
        status = rc_file.read_text().strip() if rc_file.exists() else "not reached"
        if status == "skipped":
            continue
        output = (work / f".out.{n}").read_text() if (work / f".out.{n}").exists() else ""
        errors = (work / f".err.{n}").read_text() if (work / f".err.{n}").exists() else ""
        wanted = "0" if step.background else str(step.exit)
        if status != wanted or not _matches(step.expect, output + errors):
            failures.append(
                f"{path.name}:{step.line}: {step.text}\n  status {status}, expected {wanted}"
                f"\n  {(output + errors).strip()[-600:]}"
            )
    return failures, page.not_run


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_blocks_run_as_written(path, tmp_path, capsys):
    require_program("curl")
    require_program("jq")
    failures, not_run = run_page(path, tmp_path)
    with capsys.disabled():
        for reason in not_run:
            print(f"\nnot-run {reason}", end="")
    assert not failures, "\n".join(failures)


def test_not_run_blocks_stay_few():
    not_run = [reason for path in DOCS for reason in parse(path).not_run]
    assert len(not_run) <= 6, not_run
