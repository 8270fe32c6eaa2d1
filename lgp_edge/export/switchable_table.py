"""The table of a switchable artifact: which descendant each value of its ``descendant`` input runs, with its
size, top-1 and latency on the target. Read from pool.json alone (no torch, no weights), so an export refuses a
wrong ``--descendants`` before it loads anything."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lgp_edge.errors import UsageError
from lgp_edge.specs import CPU_RUNTIMES, LatencyRecord


@dataclass(frozen=True)
class SwitchEntry:
    """One descendant inside a switchable artifact (a row of its ``descendants`` table)."""

    index: int  # value of the ``descendant`` input that runs it
    key: str  # DescendantSpec.key
    params: int  # parameters it runs (shared ones counted once)
    flops: int  # FLOPs at batch 1 (fvcore convention)
    top1: float | None  # validation top-1 in percent (None: pool not evaluated)
    latency_ms: float | None = None  # p90 latency on the export's target (None: unknown)
    latency_source: str | None = None  # "measured" or "predicted"
    threads: int | None = None  # intra-op threads its latency is for (None: unknown, or not a CPU runtime's)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "key": self.key, "params": self.params, "flops": self.flops, "top1": self.top1,
                "latency_ms": self.latency_ms, "latency_source": self.latency_source, "threads": self.threads}


def switch_entries(manifest: Any, keys: Sequence[str],
                   latencies: Mapping[str, LatencyRecord] | None = None) -> tuple[SwitchEntry, ...]:
    """The table rows for ``keys`` (in that order), from the pool's pool.json (``manifest``) alone; unknown,
    duplicate or no keys raise UsageError."""
    keys = [k.strip() for k in keys if k.strip()]
    if not keys:
        raise UsageError("the switchable selection is empty; name descendants with --descendants KEY,KEY… "
                         "(see 'lgp-edge pool info') or use --front")
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise UsageError(f"descendant '{dup[0]}' is named twice in --descendants")
    out = []
    for i, key in enumerate(keys):
        rec = manifest.record(key)  # UsageError: unknown key
        lat = (latencies or {}).get(key)
        out.append(SwitchEntry(index=i, key=key, params=rec.params, flops=rec.flops, top1=rec.top1,
                               latency_ms=lat.p90_ms if lat is not None else None,
                               latency_source=lat.source if lat is not None else None,
                               threads=lat.threads if lat is not None and lat.runtime in CPU_RUNTIMES else None))
    return tuple(out)
