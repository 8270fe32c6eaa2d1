"""Output directories: checked before any work, written beside, swapped in atomically, one writer at a time.

Every command that writes a directory (``export``, ``report``, ``pool build``, ``pool finetune``,
``ancestry train``, the baselines) goes through three steps:

1. ``check_output_dir(OUT, force, kind)`` before any work: the path is usable (UTF-8, not too long, no
   file in the way, the nearest existing folder accepts a new directory), and a non-empty OUT is refused
   unless ``--force`` is given *and* OUT is recognisably an earlier lgp-edge output of an accepted kind
   (an export by its ``manifest.json``, a pool by its ``pool.json``, …) holding nothing lgp-edge did not
   write there. Anything else (a pool under ``export --force``, a measurement store, a notes file): exit 2,
   nothing touched. The check takes the writer lock ``.OUT.lock`` beside OUT (when the folder that holds OUT exists) and
   holds it through the work, so a second writer exits 2 at its start with "OUT is being written by another
   lgp-edge" (``pool finetune`` claims its pool the same way, ``claim_in_place``).
2. ``atomic_dir(OUT)``: takes (or keeps) the writer lock, restores OUT if an earlier run was killed in the middle
   of a two-rename swap, removes temporary directories left by killed runs (``.OUT.tmp-*``,
   ``.OUT.old-*``), and yields a fresh temporary directory ``.OUT.tmp-PID-XXXXXXXX`` beside OUT; the lock
   is released when the block ends.
3. ``replace_dir(tmp, OUT)``: one ``renameat2(RENAME_EXCHANGE)`` swaps the new directory and the old one
   atomically (OUT is never missing, whatever kills the process); the old one is then removed. Where the
   kernel or file system lacks it, two renames are used (OUT -> ``.OUT.old-PID``, tmp -> OUT) and step 2
   of the next run puts ``.OUT.old-PID`` back if the process died between them.
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from lgp_edge.errors import WRITE_ERRNOS, LockIsLink, OutputBusy, UsageError, WriteFailed, write_failed
from lgp_edge.fileio import default_mode, json_loads, remove_empty_dirs

log = logging.getLogger(__name__)

# what a writer refused because another process holds OUT's lock is told to do
OUT_BUSY = "wait for it to finish or choose another --out"
IN_PLACE_BUSY = "wait for it to finish, then run this command again"  # pool eval/stitch/finetune have no --out

MAX_NAME_BYTES = 200  # OUT's last component; leaves room for ".NAME.tmp-PID-XXXXXXXX" and ".failed" in 255
MAX_PATH_BYTES = 3800  # absolute path of OUT; leaves room for the files inside below Linux's PATH_MAX (4096)
_LINUX_PATH_MAX = 4096

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


# ------------------------------------------------------------------------------------------- path checks
def check_utf8(path: str | Path, what: str) -> None:
    """A path lgp-edge names in messages, manifests and reports is UTF-8 (a name of other bytes cannot be written
    into any of them)."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(text).decode("utf-8", "backslashreplace")
        raise UsageError(f"{what} path '{shown}' is not valid UTF-8; use a UTF-8 name") from None


def check_path(path: str | Path, what: str = "output") -> Path:
    """A path lgp-edge can write and name in messages and manifests: UTF-8, within the length limits."""
    p = Path(path)
    text = str(p)
    check_utf8(p, what)
    typed = os.fspath(path)
    if typed.split(os.sep)[0] == "~" and not os.path.lexists("~"):  # './~' names such a folder on purpose
        raise UsageError(f"{what} path '{typed}' starts with '~', which the shell did not expand (it does not "
                         "after '--out='): write '--out ~/…' with a space, or the full path")
    if not p.name:
        raise UsageError(f"{what} path '{text}' has no directory name")
    if os.fspath(path) == "-":  # the shell convention for stdout/stdin, which a folder of files cannot be
        raise UsageError(f"{what} path '-' would be a folder named '-', not the standard output: give a folder name")
    if len(p.name.encode()) > MAX_NAME_BYTES:
        raise UsageError(f"{what} name '{p.name[:40]}…' is {len(p.name.encode())} bytes long; at most "
                         f"{MAX_NAME_BYTES} bytes are allowed")
    full = os.path.abspath(text)
    limit = max_path_bytes(full)
    if len(full.encode()) > limit:
        raise UsageError(f"{what} path is {len(full.encode())} bytes long; at most {limit} bytes are allowed")
    return p


def max_path_bytes(path: str | Path) -> int:
    """The longest absolute path OUT may have where ``path`` would be: the file system's PATH_MAX (``pathconf`` of
    the nearest existing folder; macOS's is 1024) less the same share ``MAX_PATH_BYTES`` leaves of Linux's 4096
    for the files inside, else ``MAX_PATH_BYTES``."""
    q = os.path.abspath(path)
    while not os.path.isdir(q) and os.path.dirname(q) != q:
        q = os.path.dirname(q)
    try:
        path_max = os.pathconf(q, "PC_PATH_MAX")
    except (AttributeError, OSError, ValueError):  # no pathconf (Windows), or no such limit here
        return MAX_PATH_BYTES
    if not isinstance(path_max, int) or path_max <= 0:  # -1: no limit reported
        return MAX_PATH_BYTES
    return path_max * MAX_PATH_BYTES // _LINUX_PATH_MAX


def _nearest_existing(p: Path) -> Path:
    """The closest ancestor of ``p`` that exists (``p``'s parent at best); a file there is an error."""
    q = Path(os.path.abspath(p)).parent
    while not q.exists():
        if q.is_symlink():  # a dangling link: mkdir would fail on it
            raise UsageError(f"output '{p}' cannot be created: '{q}' is a broken symbolic link")
        q = q.parent
    if not q.is_dir():
        raise UsageError(f"output '{p}' cannot be created: '{q}' is a file, not a directory")
    return q


def check_writable(path: str | Path) -> None:
    """Fail now, not after minutes of work, when the directory that will hold OUT rejects a new entry.

    Creates and removes a probe directory in the nearest existing folder (so read-only file systems and
    missing permissions are found even for root).
    """
    p = Path(path)
    _probe(_nearest_existing(p), f"cannot write output '{p}'", "choose another --out")


#: the way out when a pool updated in place cannot be written there
POOL_COPY = "copy the pool elsewhere and use the copy"


def check_in_place(path: str | Path, *, swapped: bool = True) -> None:
    """Fail now, not after minutes of work, when a directory updated in place (a pool: its checkpoints and
    results are written in it) rejects a new entry, or, when it is ``swapped`` for a new one, its folder does."""
    p = Path(path)
    if swapped:
        _check_not_mount(p, f"cannot update '{p}' in place", f"copy it into a folder inside ('{p}/pool') and use that")
    for base in (Path(os.path.abspath(p)).parent, p) if swapped else (p,):
        _probe(base, f"cannot update '{p}' in place", f"make it writable, or {POOL_COPY}")


def _check_not_mount(p: Path, what: str, fix: str) -> None:
    """A directory lgp-edge replaces by renaming a new one into its place cannot be a mount point (a Docker volume,
    a bind mount): the rename fails with EBUSY, which was a traceback after all the work."""
    real = Path(os.path.realpath(p))
    if real.is_dir() and os.path.ismount(real):
        raise UsageError(f"{what}: '{p}' is a mount point, which cannot be replaced by a rename; {fix}")


def _probe(base: Path, what: str, fix: str) -> None:
    try:
        probe = tempfile.mkdtemp(prefix=".lgp-edge-probe-", dir=base)
    except OSError as exc:
        raise UsageError(f"{what}: '{base}' does not accept new files ({exc.strerror or exc}); {fix}") from None
    os.rmdir(probe)


# ------------------------------------------------------------------------------------- what lgp-edge wrote
def _export_paths(p: Path, mf: dict[str, Any]) -> set[str]:
    """The paths an export's manifest says lgp-edge wrote: each artifact, its companion files and the export's
    files, beside manifest.json and EMBEDDING.md. A directory artifact (an .mlpackage) counts only while its
    files hash to the manifest's sha256: with a file added, changed or removed inside, it is the user's."""
    from lgp_edge.fileio import sha256_file, tree_sha256

    def listed(entries: Any) -> list[dict[str, Any]]:
        return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []

    def as_written(entry: dict[str, Any]) -> str | None:
        """The entry's path when it names something in OUT that is still as lgp-edge wrote it."""
        rel = entry.get("path")
        if not _plain_relative(rel):
            return None  # absolute, '..', '.' or not normalised: a manifest edited by hand claims nothing
        f = p / rel
        if f.is_symlink() or not (f.is_file() or f.is_dir()):
            return rel  # a link or nothing at all: removing it touches nothing outside
        want = entry.get("sha256")
        if f.is_dir():  # a package or folder: its whole tree, only while it hashes as recorded
            return rel if want == tree_sha256(f) else None
        return rel if want is None or want == sha256_file(f) else None  # a file changed since is the user's

    entries = [e for art in listed(mf.get("artifacts")) for e in [art, *listed(art.get("files"))]]
    entries += listed(mf.get("files"))
    own = {"manifest.json"} | {rel for rel in map(as_written, entries) if rel}
    if "EMBEDDING.md" not in {e.get("path") for e in entries}:
        own.add("EMBEDDING.md")  # exports made before it was listed with its hash
    return own


def _plain_relative(rel: Any) -> bool:
    """``rel`` is a normalised relative path that stays inside its directory ('a/b', not '/a', '../a', 'a/./b')."""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel:
        return False
    parts = rel.split("/")
    return all(part not in ("", ".", "..") for part in parts)


def _json(path: Path) -> Any:
    try:
        return json_loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _report_file(f: Path) -> bool:
    """``f`` (report.md, .html or .csv) begins as lgp-edge writes it."""
    try:
        with open(f, encoding="utf-8", errors="replace") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    if not head.startswith(REPORT_STARTS[f.name]):
        return False
    return f.name != "report.html" or REPORT_HTML_TITLE in head


def _report_plot(p: Path, name: str) -> bool:
    """``name`` is one of the report's plots: a ``pareto-*.png`` file that is a PNG and that its report.md shows
    (another file of that pattern, or a folder, is the user's)."""
    f = p / name
    if not (_REPORT_PLOT_RE.match(name) and f.is_file() and not f.is_symlink()):
        return False
    try:
        with open(f, "rb") as fh:
            png = fh.read(8) == b"\x89PNG\r\n\x1a\n"
        return png and f"]({name})" in (p / "report.md").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def _entries(p: Path) -> list[str]:
    return sorted(e.name for e in p.iterdir())


# What each kind of output holds, by name (literals here: this module must not import the torch-side modules
# that define them; tests/test_outdir.py checks them against real outputs). Checkpoint directories of a run
# (``NAME.ckpt``, e.g. ``distill-ti6+ti9.ckpt``, ``finetune.ckpt``, ``train.ckpt``) are lgp-edge's in any kind.
POOL_FILES = frozenset({"pool.json", "weights.safetensors", "ancestry.safetensors", "transforms.safetensors",
                        "descendants.json"})
ANCESTRY_FILES = frozenset({"ancestry.json", "ancestry.safetensors"})
REPORT_FILES = frozenset({"report.md", "report.html", "report.csv"})
# how each report file written by lgp-edge begins (report.py, report_html.py): a file of that name that begins
# otherwise is the user's, and --force never replaces it
REPORT_STARTS = {"report.md": "# lgp-edge report: pool ", "report.html": "<!DOCTYPE html>",
                 "report.csv": "profile,target,precision,latency_budget_ms,"}
REPORT_HTML_TITLE = "<title>lgp-edge report: "
ANCESTRY_KEYS = frozenset({"name", "config", "top1"})  # what every ancestry.json 'ancestry train' wrote holds
INTERRUPTED = "interrupted"  # recognise_output's kind for a directory holding checkpoints only
_CKPT_RE = re.compile(r"^(distill(-[A-Za-z0-9_.+-]+)?|finetune|finetune-stitch|train)\.ckpt$")
_REPORT_PLOT_RE = re.compile(r"^pareto-.+\.png$")


_CKPT_FILE_RE = re.compile(r"^\.?state(-|\.json)")  # state.json, state-<step>.safetensors, their temporary files


def _checkpoint(p: Path, name: str) -> bool:
    """``name`` is a checkpoint folder of a run: named as lgp-edge names them and holding only the files a
    checkpoint is made of (a folder of that name with anything else in it is the user's, never deleted)."""
    d = p / name
    if not (_CKPT_RE.match(name) and d.is_dir() and not d.is_symlink()):
        return False
    try:
        return all(_CKPT_FILE_RE.match(e.name) and e.is_file() and not e.is_symlink() for e in d.iterdir())
    except OSError:
        return False


def _no_checkpoint(p: Path, name: str) -> bool:
    """``name`` is a checkpoint folder holding no checkpoint (no ``state.json``: a run stopped before its first
    one was complete): nothing to resume, as good as absent."""
    return _checkpoint(p, name) and not (p / name / "state.json").exists()


def _not_named(p: Path, named: set[str], prefix: str = "") -> list[str]:
    """Entries under ``p`` that no manifest path names: a named path owns its whole tree, a folder that only
    leads to named paths is looked into."""
    out = []
    for name in _entries(p):
        rel = prefix + name
        if rel in named:
            continue
        if (p / name).is_dir() and not (p / name).is_symlink() and any(n.startswith(rel + "/") for n in named):
            out += _not_named(p / name, named, rel + "/")
        else:
            out.append(rel)
    return out


def recognise_output(path: str | Path) -> tuple[str | None, list[str]]:
    """(kind of lgp-edge output in ``path`` or None, entries in it that lgp-edge did not write there).

    Kinds: ``export`` (``manifest.json`` of kind "lgp-edge export…"; every entry is an artifact, a companion
    file or a file the manifest lists, folders looked into; a package as it was hashed), ``report``
    (``report.md``, ``report.html``, ``report.csv`` and the ``pareto-*.png`` plots),
    ``pool`` (``pool.json`` with a pool id, beside the weights, ``descendants.json`` and checkpoints),
    ``ancestry`` (``ancestry.json`` beside ``ancestry.safetensors``), ``baseline`` (a scratch or vanilla
    baseline's ``results.json`` and the ``<key>.safetensors`` it names), ``distilled`` (``pool distill``'s
    ``distilled.json`` beside the two safetensors files it hashes). Entries are relative paths; checkpoint
    directories of a killed or resumed run count as lgp-edge's in every kind, and alone they are an
    ``interrupted`` run (stopped before its first output), which ``--force`` may replace whatever its kind.
    """
    p = Path(path)
    names = [n for n in _entries(p) if not _checkpoint(p, n)]
    if not names:
        return INTERRUPTED, []  # only the checkpoints of a run stopped before its first output
    mf = _json(p / "manifest.json")
    if isinstance(mf, dict) and str(mf.get("kind", "")).startswith("lgp-edge export"):
        return "export", _not_named(p, _export_paths(p, mf))
    if "report.md" in names and _report_file(p / "report.md"):
        return "report", [n for n in names if not (n in REPORT_FILES and _report_file(p / n))
                          and not _report_plot(p, n)]
    pj = _json(p / "pool.json")
    if isinstance(pj, dict) and "pool_id" in pj and "schema_version" in pj:
        return "pool", [n for n in names if n not in POOL_FILES]
    aj = _json(p / "ancestry.json")
    if isinstance(aj, dict) and ANCESTRY_KEYS <= set(aj) and "ancestry.safetensors" in names:
        from lgp_edge.fileio import sha256_file

        want = aj.get("weights_sha256")  # recorded since the weights are checked on load; older runs have none
        changed = want is not None and (p / "ancestry.safetensors").is_file() and \
            sha256_file(p / "ancestry.safetensors") != want
        return "ancestry", [n for n in names if n not in ANCESTRY_FILES or (changed and n == "ancestry.safetensors")]
    dj = _json(p / "distilled.json")
    if isinstance(dj, dict) and dj.get("kind") == "lgp-edge distilled auxiliary models":
        own = {"distilled.json", *(dj.get("files") or {})}
        return "distilled", [n for n in names if n not in own]
    rj = _json(p / "results.json")
    if isinstance(rj, dict) and rj.get("method") in ("scratch", "vanilla") and isinstance(rj.get("configs"), list):
        own = {"results.json"} | {f"{r.get('key')}.safetensors" for r in rj["configs"] if isinstance(r, dict)}
        return "baseline", [n for n in names if n not in own]
    return None, names


def foreign_entries(path: str | Path) -> list[str]:
    """What ``path`` holds that lgp-edge did not write (relative paths); nothing for a missing directory."""
    p = Path(path)
    if not p.is_dir() or p.is_symlink():
        return []
    return recognise_output(p)[1]


def check_output_dir(path: str | Path, force: bool, kind: str | Iterable[str] | None = None) -> None:
    """Refuse bad output paths and non-empty directories; ``--force`` replaces only earlier lgp-edge output.

    ``kind``: the kinds of earlier output ``--force`` may replace (e.g. ``"export"``); None accepts any
    lgp-edge output. Nothing is written but OUT's writer lock, held until ``release`` (with the new parent folders
    it needs, removed again with it when they stay empty; a probe directory is created and removed to test
    writability).
    """
    p = check_path(path)
    kinds = None if kind is None else ({kind} if isinstance(kind, str) else set(kind))
    if p.is_symlink() and not p.exists():
        raise UsageError(f"output '{p}' is a broken symbolic link; remove it or choose another --out")
    if p.exists() and not p.is_dir():
        raise UsageError(f"output '{p}' exists and is not a directory")
    real = real_out(p)
    _check_not_cwd(p, real)
    _check_not_mount(p, "cannot write the output there", f"pass a folder inside it (--out '{p}/out')")
    check_writable(real)
    claimed = _claim(real)  # first: a run that is writing OUT right now is "being written", not "interrupted"
    try:
        if real.is_dir():
            try:
                empty = all(_no_checkpoint(real, e.name) for e in real.iterdir())
            except OSError as exc:
                raise UsageError(f"output directory '{p}' cannot be read ({exc.strerror or exc})") from None
            if not empty:
                _check_replaceable(p, real, force, kinds)
    except UsageError:
        if claimed:
            release(real)  # refused: OUT is not this run's to write
        raise


def _check_not_cwd(p: Path, real: Path) -> None:
    cwd = Path.cwd().resolve()
    if real.exists() and (real == cwd or real in cwd.parents):
        raise UsageError(f"'{p}' is the current directory or holds it: it is replaced as a whole; run from "
                         "another directory or choose another --out")


def claim_in_place(path: str | Path) -> None:
    """A directory a command replaces in place (``pool finetune POOL``): not the current directory, and one
    writer at a time from the check before the work (a second run, ``--resume`` or not, exits 2)."""
    real = real_out(path)
    _check_not_cwd(Path(path), real)  # first: '.' is the current directory, not a path without a name
    check_path(real)
    check_in_place(real)
    _claim(real, busy=IN_PLACE_BUSY)


def _check_replaceable(p: Path, real: Path, force: bool, kinds: set[str] | None) -> None:
    found, foreign = recognise_output(real)
    if not force:
        if found == INTERRUPTED:
            ckpts = ", ".join(_entries(real))
            raise UsageError(f"output directory '{p}' holds the checkpoints of an interrupted run ({ckpts}): continue "
                             "it with --resume (same arguments), or pass --force to start over")
        raise UsageError(f"output directory '{p}' exists and is not empty; choose another or pass --force")
    want = " or ".join(sorted(kinds)) if kinds else "lgp-edge"
    if found is None or (kinds is not None and found not in kinds and found != INTERRUPTED):
        what = f"a {found}" if found else f"files lgp-edge did not write ({', '.join(foreign[:3])})"
        raise UsageError(f"--force replaces only an earlier {want} output, and '{p}' holds {what}; nothing was "
                         "touched: choose another --out or remove it yourself")
    if foreign:
        raise UsageError(f"--force would delete '{p / foreign[0]}', which lgp-edge did not write there (or which "
                         "was changed since); nothing was touched: move it away or choose another --out")


def real_out(path: str | Path) -> Path:
    """OUT as it is written: absolute, '..' resolved, and where OUT is a symbolic link to a directory, the
    directory it points to (replacing the link would leave the folder it named untouched and the link lost)."""
    return Path(os.path.realpath(path))


# OUT's writer lock, held from the check before the work to the swap that publishes it (``atomic_dir``), so a
# second run on the same OUT is refused at its start, not left to replace the first one's output at its end.
_claims: dict[str, ExitStack] = {}
_released_at_exit: list[bool] = []


def _claim(real: Path, busy: str = OUT_BUSY) -> bool:
    """Take OUT's writer lock until ``release``; whether this call took it."""
    if os.environ.get("RANK", "0") not in ("", "0"):
        return False  # a torchrun rank other than 0 writes nothing
    key = str(real)
    if key in _claims or _lock_file(real) in _held:
        return False  # claimed already, or checked again under the lock atomic_dir holds (export's recheck)
    stack = ExitStack()
    # a new parent folder is made for the lock (a training run writes its checkpoints there before its output:
    # unlocked, a second run took them for an interrupted one's and trained into them), and removed again
    # with the lock when it stays empty (a run refused later writes nothing)
    created = [d for d in (real.parent, *real.parent.parents) if not d.exists()]
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False  # the write itself says why, naming the path
    stack.callback(remove_empty_dirs, created)
    stack.enter_context(output_lock(real, busy))
    if not _released_at_exit:
        atexit.register(release)  # a library caller that stops before publishing leaves no lock file behind
        _released_at_exit.append(True)
    _claims[key] = stack
    return True


def release(path: str | Path | None = None) -> None:
    """Give up the writer lock ``check_output_dir`` took for ``path`` (every one when None)."""
    keys = list(_claims) if path is None else [str(real_out(path))]
    for key in keys:
        stack = _claims.pop(key, None)
        if stack is not None:
            stack.close()


def check_resume_dir(path: str | Path) -> None:
    """``--resume`` continues a run in OUT and then replaces OUT: refuse now if OUT holds anything lgp-edge did
    not write there (the check ``--force`` makes, for a directory that may hold only checkpoints so far)."""
    p, real = Path(path), real_out(path)
    _check_not_cwd(p, real)
    check_path(real)
    claimed = _claim(real)
    foreign = foreign_entries(real) if real.is_dir() else []
    if foreign:
        if claimed:
            release(real)
        raise UsageError(f"--resume would replace '{p}', which holds '{foreign[0]}' that lgp-edge did not write "
                         "there; nothing was touched: move it away or choose another --out")


def check_not_inside(out: str | Path, path: str | Path, what: str) -> None:
    """``path`` (the pool, the store…) must not be OUT or lie inside it: replacing OUT would delete it."""
    o, q = real_out(out), real_out(path)
    if q == o or o in q.parents:
        raise UsageError(f"--out '{out}' would replace {what} '{path}'; choose another --out")


# ----------------------------------------------------------------------------------------------- writer lock
_held: dict[str, int] = {}  # lock path -> depth (the lock is re-entrant within one process)


def _lock_file(real: Path) -> str:
    return str(real.with_name(f".{real.name}.lock"))


@contextmanager
def output_lock(path: str | Path, busy: str = OUT_BUSY) -> Iterator[None]:
    """Exclusive writer lock ``.NAME.lock`` beside ``path`` (flock; gone with the process that held it); ``busy``
    is what the refusal tells the user to do while another process holds it."""
    import fcntl  # POSIX only, imported here so that importing lgp-edge works anywhere (it runs on Linux, macOS)

    lock = _lock_file(real_out(path))
    if lock in _held:
        _held[lock] += 1
        try:
            yield
        finally:
            _held[lock] -= 1
        return
    while True:
        try:  # never through a link: a lock someone else made a link would create or truncate what it names
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise LockIsLink(f"'{lock}' is a symbolic link, and lgp-edge never makes its lock one; remove it and "
                             "run again") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputBusy(f"'{path}' is being written by another lgp-edge; {busy}") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed the file between our open and flock: take the new one
    _held[lock] = 1
    try:
        yield
    finally:
        del _held[lock]
        try:
            os.unlink(lock)
        except FileNotFoundError:
            pass
        os.close(fd)


# ------------------------------------------------------------------------------- temporary dirs and the swap
def _leftover_re(name: str) -> re.Pattern[str]:
    # .NAME.tmp-PID-XXXXXXXX (atomic_dir's; tempfile's 8 characters), .NAME.old-PID (the swap's; see _leftover)
    return re.compile(rf"^\.{re.escape(name)}\.(tmp-(\d+)-[a-z0-9_]{{8}}|old-\d+)$")


def _pid_max() -> int:
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 99_999  # macOS


def _process_gone(pid: int) -> bool:
    """No process has the id ``pid``, which is a process id this system can give."""
    if not 0 < pid <= _pid_max():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # another user's process
        return False
    return False


def _leftover(e: Path, pattern: re.Pattern[str]) -> bool:
    """``e`` is what a killed lgp-edge left beside its output: a temporary folder of its name whose process is
    gone, or an ``.OUT.old-PID`` that holds an lgp-edge output and nothing else (the one the swap was replacing).
    A user's folder that only looks like one (``.demo.old-2025`` or ``.demo.tmp-20240101`` with a backup in it,
    ``.demo.old-2026`` with a pool and the user's notes) is never removed (``recover`` renames an old output back
    only where OUT is missing: see ``_restorable``)."""
    m = pattern.match(e.name)
    if not (m and e.is_dir() and not e.is_symlink()):
        return False
    if m.group(2) is not None:
        return _process_gone(int(m.group(2)))
    kind, foreign = recognise_output(e)
    return kind is not None and not foreign


def _restorable(p: Path, pattern: re.Pattern[str]) -> list[Path]:
    """The ``.OUT.old-N`` folders beside a missing OUT that hold an lgp-edge output (whatever else they hold), the
    newest first: what a run killed between the fallback swap's two renames left."""
    olds = []
    for e in p.parent.iterdir():
        m = pattern.match(e.name)
        if m and m.group(2) is None and e.is_dir() and not e.is_symlink() and recognise_output(e)[0] is not None:
            olds.append(e)
    return sorted(olds, key=lambda e: e.stat().st_mtime, reverse=True)


def recover(path: str | Path) -> None:
    """Undo what a killed run left beside ``path``; call with the writer lock held.

    OUT missing and ``.OUT.old-PID`` present (killed between the two renames of the fallback swap): the
    old directory is renamed back. Then every ``.OUT.tmp-*`` / ``.OUT.old-*`` left by killed runs is removed.
    """
    p = real_out(path)
    if not p.parent.is_dir():
        return
    pattern = _leftover_re(p.name)
    if not p.exists() and not p.is_symlink():
        olds = _restorable(p, pattern)
        if olds:  # renaming back destroys nothing: also an old output holding the user's files (carried over)
            os.rename(olds[0], p)
            log.warning("restored '%s' from '%s' (an earlier run was killed while replacing it)", p, olds[0].name)
    left = [e for e in p.parent.iterdir() if _leftover(e, pattern)]
    for e in left:
        log.info("removing '%s' (left by a killed lgp-edge run)", e)
        shutil.rmtree(e, ignore_errors=True)


def recover_unlocked(path: str | Path) -> None:
    """``recover`` for readers, when a killed run left something and no writer holds OUT's lock."""
    p = real_out(path)
    if not p.parent.is_dir() or not os.access(p.parent, os.W_OK):
        return
    pattern = _leftover_re(p.name)
    try:
        if not any(_leftover(e, pattern) for e in p.parent.iterdir()) and (
                p.exists() or p.is_symlink() or not _restorable(p, pattern)):
            return
    except OSError:
        return
    try:
        with output_lock(p):
            recover(p)
    except (OutputBusy, LockIsLink, OSError):
        pass


@contextmanager
def atomic_dir(path: str | Path, elsewhere: str = "choose another --out") -> Iterator[str]:
    """A temporary directory beside ``path`` (same filesystem, so ``replace_dir`` moves it into place).

    Holds the writer lock for ``path`` throughout and first cleans what killed runs left (``recover``).
    Whatever is left of the temporary directory when the block ends (an error before ``replace_dir``) is
    removed. A write the environment refuses in the block (an OSError of ``WRITE_ERRNOS`` naming no file, a
    file in the temporary directory or beside it, or a WriteFailed about a file in the temporary directory) is
    a WriteFailed naming the file as it would be in ``path``, with ``elsewhere`` as the other way out than
    freeing space or making the folder writable.
    """
    p = real_out(check_path(path))
    tmp = None
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with output_lock(p):
            recover(p)
            tmp = tempfile.mkdtemp(prefix=f".{p.name}.tmp-{os.getpid()}-", dir=p.parent)
            try:
                yield tmp
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except (OSError, WriteFailed) as exc:
        err = exc
        if isinstance(exc, WriteFailed):  # a write point's message names the temporary file and its own way out
            if exc.error is None or exc.path is None or not _inside(Path(os.fsdecode(exc.path)), tmp):
                raise  # one about a file elsewhere (a scratch folder) says it right
            err = OSError(exc.error.errno, exc.error.strerror, exc.path)
        shown = _written(err, p, tmp)
        if err.errno not in WRITE_ERRNOS or shown is None:
            raise
        raise write_failed(err, shown, elsewhere) from None
    finally:
        release(p)  # the output is published (or the run failed): the claim of the check before the work ends


def _written(exc: OSError, p: Path, tmp: str | None) -> Path | None:
    """The path an OSError raised while writing output ``p`` in ``tmp`` is about, as it would be in ``p``: ``p``
    when it names no file; None when it names a file neither in ``tmp`` nor beside it (an input)."""
    if exc.filename is None:
        return p
    f = Path(os.path.abspath(os.fsdecode(exc.filename)))
    if _inside(f, tmp):
        return p / f.relative_to(tmp)
    return f if f.parent == p.parent or p in f.parents else None


def _inside(f: Path, tmp: str | None) -> bool:
    """Whether ``f`` is the temporary directory ``tmp`` or in it."""
    f = Path(os.path.abspath(f))
    return tmp is not None and (f == Path(tmp) or Path(tmp) in f.parents)


def _renameat2() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def exchange(a: str | Path, b: str | Path) -> bool:
    """Atomically swap two existing directories (renameat2 RENAME_EXCHANGE); False where unsupported."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(str(a)), _AT_FDCWD, os.fsencode(str(b)), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _carry_foreign(old: Path, new: Path) -> None:
    """Copy into ``new`` what ``old`` holds that lgp-edge did not write (e.g. a file added to OUT while a long
    run was under way, after the check before the work), so that replacing ``old`` deletes only lgp-edge's own
    files. A name the new output uses itself is refused (UsageError), nothing replaced."""
    for rel in foreign_entries(old):
        src, dst = old / rel, new / rel
        if dst.exists() or dst.is_symlink():
            raise UsageError(f"'{src}' was not written by lgp-edge and the new output writes the same name; nothing "
                             f"was replaced: move it away and run again")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir() and not src.is_symlink():
            shutil.copytree(src, dst, symlinks=True)
        else:
            shutil.copy2(src, dst, follow_symlinks=False)
        log.warning("kept '%s' (lgp-edge did not write it) in the new '%s'", rel, old)


def replace_dir(tmp: str | Path, path: str | Path) -> None:
    """Move directory ``tmp`` to ``path``, replacing whatever is there; ``path`` is never missing.

    What the old ``path`` holds that lgp-edge did not write is copied into ``tmp`` first (``_carry_foreign``).

    Call inside ``atomic_dir(path)`` (which holds the lock and recovers a killed fallback swap).
    """
    p = real_out(path)
    os.chmod(tmp, default_mode(directory=True))
    if not p.exists():
        os.rename(tmp, p)
        return
    _carry_foreign(p, Path(tmp))
    if exchange(tmp, p):
        shutil.rmtree(tmp, ignore_errors=True)  # now the old directory; a kill here leaves it for recover()
        return
    old = p.with_name(f".{p.name}.old-{os.getpid()}")
    os.replace(p, old)
    os.replace(tmp, p)  # a kill before this line: the next atomic_dir(path) renames `old` back
    shutil.rmtree(old, ignore_errors=True)
