"""Files: read only what exists, write atomically (readers see the old file or the new one, never half of one)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from robustbench_cli.core.errors import TargetError, UserError


def existing_file(path: str | Path, what: str) -> Path:
    """The path of a non-empty file, or one clear line saying what is wrong with it."""
    p = Path(path).expanduser()
    if not p.exists():
        raise TargetError(f"{what} {str(path)!r} not found")
    if p.is_dir():
        raise TargetError(f"{what} {str(path)!r} is a folder, not a file")
    if p.stat().st_size == 0:
        raise TargetError(f"{what} file {str(path)!r} is empty")
    return p


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half of one."""
    atomic_write_all([(Path(path), text)])


def atomic_write_all(files: list[tuple[Path, str]]) -> None:
    """Write several files as one: every temporary is written (and synced) first, and only when all of them are
    whole do they replace their targets. A failure while writing (a full disk, a folder that vanished) leaves every
    existing file as it was and names the file that failed."""
    temps: list[tuple[str, Path]] = []
    try:
        for path, text in files:
            path = Path(path)
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
                temps.append((tmp, path))
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, _mode_for(path))
            except OSError as e:
                raise UserError(f"cannot write {path} ({e.strerror or e}); no report was replaced") from None
        for tmp, path in temps:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in temps:
            Path(tmp).unlink(missing_ok=True)
        raise


def _mode_for(path: Path) -> int:
    """mkstemp makes the file private (0600); give it the mode a plain open() would (or the file's old mode)."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def writable_parent(path: Path, label: str) -> Path:
    """Create the folder that will hold ``path`` if needed and check it is writable; errors start with ``label``."""
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        # a regular file on the way makes mkdir say "File exists"/"Not a directory": name that file instead
        blocker = next((a for a in (parent, *parent.parents) if a.exists() and not a.is_dir()), None)
        why = f"{blocker} is a file, not a folder" if blocker is not None else e.strerror
        raise UserError(f"{label}: cannot create folder {parent} ({why})") from None
    if not os.access(parent, os.W_OK):
        raise UserError(f"{label}: folder {parent} is not writable")
    return parent


@contextlib.contextmanager
def output_lock(path: Path) -> Iterator[None]:
    """Hold ``<path>.lock`` for a scan's whole run: a second scan writing the same report (and so the same state file)
    is refused with one line instead of silently replacing the first one's report. Released, and removed, at the end;
    where the platform has no ``fcntl`` the scan runs unlocked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    lock = Path(path).with_name(Path(path).name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            raise UserError(f"another robust scan (pid {holder}) is writing {path}; wait for it to finish or give "
                            "another -o") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
