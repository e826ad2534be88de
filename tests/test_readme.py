"""The README's bring-your-own-model example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "bytes, golden accuracy" in out
    assert (tmp_path / "mine.img").stat().st_size > 0
    accuracy = float(re.search(r"accuracy ([\d.]+)%", out).group(1))
    assert accuracy > 80
