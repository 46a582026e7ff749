"""Check, and where it is safe repair, an Optuna journal file before it is opened.

    python -m search.study.journal studies/optuna.journal            # check: exit 0 if sound, 2 if damaged
    python -m search.study.journal studies/optuna.journal --repair   # back it up, drop the damaged lines

Optuna reads a journal line by line. A torn last line (a writer killed mid-write, a full disk) is
skipped silently, and the next write then fails deep inside Optuna; a garbage line elsewhere fails
the storage's constructor with a bare JSONDecodeError. Here:
- a torn last line is repaired under the journal's own lock: its bytes are moved to a
  `<journal>.torn-<time>` file (nothing is deleted) and a warning names both files;
- a damaged line anywhere else is refused with an error naming the file and the line numbers,
  and the `--repair` command that keeps a full backup before dropping them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from optuna.storages.journal import JournalFileSymlinkLock
from optuna.storages.journal._file import get_lock_file


class JournalDamagedError(ValueError):
    """The journal has damaged lines that are not a torn tail; the message says where and how to fix it."""


@dataclass(frozen=True)
class JournalDamage:
    path: Path
    bad_lines: list[int] = field(default_factory=list)  # 1-based numbers of complete lines that are not JSON objects
    torn_tail: bytes = b""  # an unterminated last line

    @property
    def sound(self) -> bool:
        return not self.bad_lines and not self.torn_tail


def inspect_journal(path: Path) -> JournalDamage:
    """Which lines of the journal Optuna could not replay."""
    data = path.read_bytes() if path.exists() else b""
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline
    bad = [i for i, line in enumerate(lines, start=1) if not _is_log_line(line)]
    return JournalDamage(path, bad, torn)


def _is_log_line(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def check_journal(path: Path) -> None:
    """Before opening: repair a torn tail under the lock, refuse other damage with a clear error."""
    if inspect_journal(path).sound:
        return
    with get_lock_file(JournalFileSymlinkLock(str(path))):
        damage = inspect_journal(path)  # again, under the lock: a writer may have finished its line
        if damage.bad_lines:
            shown = ", ".join(map(str, damage.bad_lines[:10])) + (" ..." if len(damage.bad_lines) > 10 else "")
            raise JournalDamagedError(
                f"Optuna journal {path} is damaged: line(s) {shown} are not journal records"
                f"{' and its last line is torn' if damage.torn_tail else ''}. Stop every worker, then run "
                f"`python -m search.study.journal {path} --repair` (it keeps a full backup and drops only those "
                "lines).")
        if damage.torn_tail:
            saved = _cut_torn_tail(path, damage.torn_tail)
            warnings.warn(f"Optuna journal {path}: its last line was torn (a writer died mid-write); the "
                          f"{len(damage.torn_tail)} bytes were moved to {saved} and the journal continues.",
                          stacklevel=2)


def _cut_torn_tail(path: Path, tail: bytes) -> Path:
    saved = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}")
    saved.write_bytes(tail)
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size - len(tail))
    return saved


def repair_journal(path: Path) -> tuple[Path, JournalDamage]:
    """Back the journal up, then rewrite it without the damaged lines (under the lock)."""
    with get_lock_file(JournalFileSymlinkLock(str(path))):
        damage = inspect_journal(path)
        backup = path.with_name(f"{path.name}.backup-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.copy2(path, backup)
        lines = path.read_bytes().split(b"\n")[:-1]
        kept = [line for i, line in enumerate(lines, start=1) if i not in set(damage.bad_lines)]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(b"".join(line + b"\n" for line in kept))
        tmp.replace(path)
    return backup, damage


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m search.study.journal", description=__doc__.split("\n\n")[0])
    p.add_argument("journal", type=Path)
    p.add_argument("--repair", action="store_true", help="back up the file, then drop the damaged lines")
    args = p.parse_args(argv)
    if not args.journal.is_file():
        print(f"error: {args.journal} is not a file", file=sys.stderr)
        return 2
    if args.repair:
        backup, damage = repair_journal(args.journal)
        print(f"{args.journal}: dropped {len(damage.bad_lines)} damaged line(s)"
              f"{' and a torn last line' if damage.torn_tail else ''}; the original is kept in {backup}")
        return 0
    damage = inspect_journal(args.journal)
    if damage.sound:
        print(f"{args.journal}: sound")
        return 0
    print(f"{args.journal}: damaged lines {damage.bad_lines}, torn last line: {bool(damage.torn_tail)}",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
