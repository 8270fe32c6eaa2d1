"""docs/API.md: its examples, run in order as one script; the records are the CLI's types."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "API.md"


def test_api_doc_examples_run(tiny_pool: Path, tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 4
    script = (f"POOL = {str(tiny_pool)!r}\nSTORE = {str(tmp_path / 'store.sqlite')!r}\n"
              f"OUT = {str(tmp_path / 'out')!r}\n" + "\n".join(blocks)
              + "\nfrom lgp_edge.specs import DescendantRecord, LatencyRecord\n"
                "from lgp_edge.select import Selection\nfrom lgp_edge.export.pipeline import ExportResult\n"
                "assert isinstance(records[0], DescendantRecord) and isinstance(lat[0], LatencyRecord)\n"
                "assert isinstance(sel, Selection) and isinstance(result, ExportResult)\n"
                "assert manifest_json['descendant']['key'] == result.manifest['descendant']['key']\n"
                "assert len(lat) == len(records) and lat[0].source == 'predicted'\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "['onnx', 'openvino']" in res.stdout and "passed" in res.stdout


def test_import_is_cheap() -> None:
    code = "import sys, lgp_edge, lgp_edge.api; print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', " \
           "'openvino', 'timm') if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr
