"""The README's Python quickstart runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quickstart_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python block"
    exec(compile(blocks[0], "README.md", "exec"), {})
    out = capsys.readouterr().out.split()
    rev, hmc = float(out[-2]), float(out[-1])
    assert hmc < rev  # the README's claim: HMC is closer to the exact product


def test_image_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2, "README lost its image example"
    exec(compile(blocks[1], "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "torch.Size([20, 1, 8, 8])" in out and "torch.Size([4, 3, 16, 16])" in out
    assert out.split()[-1] == "4"
