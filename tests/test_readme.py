"""The README's Python block runs as written, so the README cannot rot."""

from __future__ import annotations

import re

from conftest import REPO


def test_readme_python_block_runs(tmp_path, data_root, monkeypatch, capsys):
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1
    monkeypatch.setenv("HQCNN_DATA_ROOT", str(data_root))
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "'quantum': 22" in out and "'backend': 'aer_noisy'" in out
    assert re.search(r"test AUC (\d\.\d{3}) \[(\d\.\d{3}), (\d\.\d{3})\]", out)
    auc, low, high = map(float, re.search(r"test AUC (\S+) \[(\S+), (\S+)\]", out).groups())
    assert low < auc < high
    assert (tmp_path / "runs" / "api" / "best.pt").is_file()
