"""Optional backends (onnxruntime, openvino, nncf, coremltools, tensorrt, ...): present, and importable.

A package can be installed and still fail to import (its native library missing, a half-removed install, a
version too old for what it imports): ``find_spec`` finds it, the import raises. ``require_importable`` imports
it and turns either case into one ``BackendMissing`` line that says which. ``require`` finds the package only
(cheap: bad input is refused before any backend or torch is imported), and imports it too inside ``importing()``,
which ``export`` enters once the request and the pool have passed their checks, before any work.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import importlib.util
from collections.abc import Iterator

from lgp_edge.errors import NO_HOME_MESSAGE, BackendMissing

_IMPORTING: contextvars.ContextVar[bool] = contextvars.ContextVar("lgp_edge_importing_backends", default=False)


@contextlib.contextmanager
def importing() -> Iterator[None]:
    """``require`` imports the packages it checks (not only finds them) for the duration."""
    token = _IMPORTING.set(True)
    try:
        yield
    finally:
        _IMPORTING.reset(token)


def _installed(package: str) -> bool:
    """``package`` is found, without importing it."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a parent that fails, or a module set to None
        return False


def require(package: str, extra: str, what: str = "") -> None:
    """Raise BackendMissing unless ``package`` is installed (and, inside ``importing()``, imports)."""
    if _IMPORTING.get():
        require_importable(package, extra, what)
    elif not _installed(package):
        raise BackendMissing(package, extra, what)


def import_failure(package: str) -> str | None:
    """None when ``package`` imports; "" when it is not installed; else the first line of why it does not."""
    if not _installed(package):
        return ""
    import warnings

    from lgp_edge.export.quiet import quiet_loggers

    try:
        with quiet_loggers(package), warnings.catch_warnings():  # its import-time notes are not the user's
            warnings.simplefilter("ignore")
            importlib.import_module(package)
    except Exception as exc:  # noqa: BLE001 - whatever the backend raises on import
        if isinstance(exc, RuntimeError) and str(exc) == NO_HOME_MESSAGE:
            raise  # not a broken install: a user without HOME, which the CLI says in its own line
        text = (str(exc).splitlines() or [""])[0][:200]
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return None


def require_importable(package: str, extra: str, what: str = "") -> None:
    """Raise BackendMissing unless ``package`` imports (saying whether it is missing or broken)."""
    failure = import_failure(package)
    if failure is not None:
        raise BackendMissing(package, extra, what, cause=failure or None)
