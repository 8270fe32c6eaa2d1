"""EMBEDDING.md of a switchable export: the descendants table and how an app picks one at run time.

The sections are templates in ``lgp_edge/data/templates/switchable/``; the Kotlin (ONNX Runtime Android)
and Swift (Core ML) sources they quote (``SwitchableClassifier.kt``, ``SwitchableClassifier.swift`` there)
are also in docs/SWITCHABLE.md, and a test keeps the two copies identical.
"""

from __future__ import annotations

from typing import Any

from lgp_edge.export.assets import template


def kotlin_sample() -> str:
    """The Kotlin class that switches descendants by thermal state and device model (ONNX Runtime Android)."""
    return template("switchable/SwitchableClassifier.kt")


def swift_sample() -> str:
    """The Swift class that switches descendants (Core ML functions) by thermal state and device model."""
    return template("switchable/SwitchableClassifier.swift")


def _rows_threads(rows: list[dict[str, Any]]) -> int | None:
    """The one thread count every row's latency is for (None: unknown, not a CPU runtime's, or several)."""
    counts = {r.get("threads") for r in rows} - {None}
    return counts.pop() if len(counts) == 1 else None


def _table(rows: list[dict[str, Any]], with_function: bool, batch: int = 1, threads: int | None = None) -> str:
    from lgp_edge.progress import counted
    from lgp_edge.select import per_batch

    count = f", {counted(threads, 'thread')}" if threads else ""
    head = "| index | key | " + ("Core ML function | " if with_function else "") + \
           f"params | MFLOPs | top-1 % | p90 ms on target{per_batch(batch)}{count} |\n"
    head += "|---:|---|" + ("---|" if with_function else "") + "---:|---:|---:|---:|\n"
    for r in rows:
        top1 = f"{r['top1']:.2f}" if r.get("top1") is not None else "n/a"
        lat = f"{r['latency_ms']:.3g} ({r['latency_source']})" if r.get("latency_ms") is not None else "n/a"
        fn = f"`{r['function']}` | " if with_function else ""
        head += f"| {r['index']} | `{r['key']}` | {fn}{r['params']:,} | {r['flops'] / 1e6:.1f} | {top1} | {lat} |\n"
    return head


def embedding_markdown(mf: dict[str, Any]) -> str:
    """The EMBEDDING.md text for a switchable export's manifest."""
    arts = {a["format"]: a for a in mf["artifacts"]}
    rows = mf["descendants"]
    threads = _rows_threads(rows)
    coreml = arts.get("coreml")
    if coreml is not None:
        names = {f["key"]: f["function"] for f in coreml["functions"]}
        rows = [{**r, "function": names[r["key"]]} for r in rows]
    out = [f"# Embedding the switchable model (pool `{mf['pool']['pool_id']}`, target `{mf['target']['name']}`)\n",
           f"{len(rows)} descendants ({mf['selection']}) in one artifact; each weight is stored once. "
           "The app picks one at run time, e.g. by the device model or its thermal state.\n",
           _table(rows, coreml is not None, mf["profile"].get("batch", 1), threads)]
    if "onnx" in arts:
        a = arts["onnx"]
        out.append("\n" + template("switchable/onnx.md").format(
            path=a["path"], input_shape=a["inputs"][0]["shape"], kotlin=kotlin_sample(),
            threads=threads or 0, threads_note=("the thread count the table's latencies are for" if threads
                                                else "ONNX Runtime's default: one per core")))
    if coreml is not None:
        out.append("\n" + template("switchable/coreml.md").format(
            path=coreml["path"], deployment=coreml["deployment"], default_function=coreml["default_function"],
            swift=swift_sample()))
    return "\n".join(out)
