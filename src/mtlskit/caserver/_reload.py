"""ca.toml as a running ``ca serve`` applies it: re-read on SIGHUP and before each decision.

An operator who edits ca.toml (an ``[[approval]]`` rule, ``allowed_ids``) replaced the
policy; issuing under the old one after that is the defect of issue 26. The file is read
and hashed before every enroll/poll/renew (about 1 KiB: microseconds, cheaper to get right
than an mtime whose granularity can hide a quick edit). A valid change swaps the policy;
keys that only a restart can apply (the store, the issuing key) keep their old value
and are named. An invalid file refuses issuance until it is fixed.
"""

from __future__ import annotations

import hashlib
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Generic, TypeVar

from mtlskit.errors import MtlskitError
from mtlskit.issue import CaConfig, EnrollmentRefused
from mtlskit.issue._config import ApprovalConfig

__all__ = ["RESTART_KEYS", "ConfigWatch", "describe_change", "reload_on"]

_Built = TypeVar("_Built")

# Keys read once at start: the issuing key and chain, the store, the bundle's names.
RESTART_KEYS: Final = (
    "name",
    "trust_domain",
    "intermediate",
    "database",
    "database_password_file",
    "durability",
    "pkcs11",  # the token key is opened once at start, with the PIN given then
)


def _rule(rule: ApprovalConfig) -> str:
    return f"{', '.join(rule.ids)} by {rule.approvers}"


def describe_change(old: CaConfig, new: CaConfig) -> tuple[list[str], list[str]]:
    """(what changed and is applied, keys that changed but need a restart), in file order."""
    before, after = old.model_dump(), new.model_dump()
    applied, restart = [], []
    for key in CaConfig.model_fields:
        if before[key] == after[key]:
            continue
        if key in RESTART_KEYS:
            restart.append(key)
        elif key == "approval":
            added = [_rule(rule) for rule in new.approval if rule not in old.approval]
            removed = [_rule(rule) for rule in old.approval if rule not in new.approval]
            parts = [f"+{len(added)} rule ({'; '.join(added)})"] if added else []
            parts += [f"-{len(removed)} rule ({'; '.join(removed)})"] if removed else []
            applied.append(f"approval: {', '.join(parts) or 'reordered'}")
        elif key == "provisioners":
            was = {entry.name: entry for entry in old.provisioners}
            now = {entry.name: entry for entry in new.provisioners}
            parts = [f"+{name}" for name in now if name not in was]
            parts += [f"-{name}" for name in was if name not in now]
            parts += [f"~{name}" for name in now if name in was and now[name] != was[name]]
            applied.append(f"provisioners: {', '.join(parts) or 'reordered'}")
        else:
            applied.append(f"{key}: {before[key]!r} -> {after[key]!r}")
    return applied, restart


def reload_on(signum: int, reload: Callable[[str], None]) -> None:
    """Call ``reload(signal name)`` whenever ``signum`` arrives (main thread only, before
    serving): ``ca serve``'s and ``ca console``'s SIGHUP.

    The handler only sets an event; a thread of its own reloads, because a reload waits
    for the server's worker thread, which a handler interrupting the event loop must not."""
    wanted = threading.Event()
    name = signal.Signals(signum).name

    def reloader() -> None:
        while True:
            wanted.wait()
            wanted.clear()
            reload(name)

    threading.Thread(target=reloader, name="mtlskit-ca-reload", daemon=True).start()
    signal.signal(signum, lambda _signum, _frame: wanted.set())


@dataclass(slots=True, kw_only=True)
class ConfigWatch(Generic[_Built]):
    """The ca.toml a server runs under, and how to build what it serves from a new one
    (``ca serve``: its ``RegistrationAuthority``; ``ca console``: its ``CaDirectory``).

    Not frozen: it is the one piece of state a reload replaces, used on the CA thread only."""

    path: Path
    load: Callable[[], CaConfig]  # reads and validates the file (CaDirectory.open's checks)
    build: Callable[[CaConfig], _Built]
    config: CaConfig
    digest: bytes
    log: Callable[[str], None]
    broken: str | None = None  # the error of a changed file that did not validate

    @staticmethod
    def digest_of(path: Path) -> bytes:
        try:
            return hashlib.sha256(path.read_bytes()).digest()
        except OSError as exc:
            return f"unreadable: {exc}".encode()

    def check(self, reason: str, *, force: bool = False) -> _Built | None:
        """A new authority when the file changed and is valid; ``None`` when nothing changed.

        A changed file that does not validate keeps the old policy for SIGHUP's log and
        makes every decision ``config_invalid`` (503) until the file is fixed."""
        digest = self.digest_of(self.path)
        if digest == self.digest and not force:
            if self.broken is not None:
                raise EnrollmentRefused("config_invalid", self.broken, status=503)
            return None
        try:
            config = self.load()
        except MtlskitError as exc:
            self.digest = digest
            if self.broken != str(exc) or force:
                self.log(
                    f"ca.toml not reloaded ({reason}): {exc}; the old policy is kept "
                    "and nothing is issued until the file is fixed"
                )
            self.broken = str(exc)
            raise EnrollmentRefused(
                "config_invalid", f"{exc} (fix ca.toml; nothing is issued meanwhile)", status=503
            ) from None
        applied, restart = describe_change(self.config, config)
        self.digest, self.broken = digest, None
        line = f"ca.toml reloaded ({reason}): " + ("; ".join(applied) or "no policy change")
        if restart:
            line += f"; restart needed: {', '.join(restart)} (kept the running values)"
        self.log(line)
        if not applied:
            return None
        # Built from what runs: a restart-only key edited in the file (trust_domain, the
        # store) must not reach the new authority while the log says it was kept.
        self.config = config.model_copy(
            update={key: getattr(self.config, key) for key in RESTART_KEYS}
        )
        return self.build(self.config)
