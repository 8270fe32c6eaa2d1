"""A profiling request checked before anything is built, measured or imported: the precision and connection of
its target, and (for this host) whether the runtime is installed here and computes the precision."""

from __future__ import annotations

from lgp_edge.errors import UsageError
from lgp_edge.specs import RUNTIMES, TargetSpec


def default_precision(target: TargetSpec) -> str:
    """The target's first listed precision (target files list the one they deploy first)."""
    return target.precisions[0]


def check_request(target: TargetSpec, runtime: str, precision: str, *, measuring: bool) -> None:
    """Refuse impossible combinations before anything runs; on this host, measuring also checks the runtime here
    (``check_runtime_here``, which imports the runtime's module)."""
    check_target(target, runtime, precision, measuring=measuring)
    if measuring and target.connection.kind == "local":
        check_runtime_here(runtime, precision)


def check_target(target: TargetSpec, runtime: str, precision: str, *, measuring: bool) -> None:
    """The checks of ``check_request`` that need only the target file (nothing is imported)."""
    if runtime not in RUNTIMES:
        raise UsageError(f"unknown runtime '{runtime}'; runtimes: {', '.join(RUNTIMES)}")
    if precision not in target.precisions:
        raise UsageError(f"target '{target.name}' supports precisions {', '.join(target.precisions)}, "
                         f"not '{precision}'")
    kind = target.connection.kind
    if measuring and kind == "none":
        raise UsageError(f"target '{target.name}' has no connection (kind 'none'): it cannot be measured; "
                         "use --predict")
    if kind != "local" and runtime != target.runtime:  # a device runs its one runtime, measured or predicted
        raise UsageError(f"target '{target.name}' runs '{target.runtime}', not '{runtime}': leave --runtime out")


def check_runtime_here(runtime: str, precision: str) -> None:
    """``runtime`` is installed on this host and computes ``precision`` here."""
    from lgp_edge.profiling.runtimes import check_installed, get_runtime

    check_installed(runtime)
    rt = get_runtime(runtime)
    rt.check_available()
    rt.check_precision(precision)
