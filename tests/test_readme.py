"""The README's Python examples run and print what the README says they print."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

# Each example runs in its own Python process (seconds of imports each).
pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[1] / "README.md"


BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("block", BLOCKS, ids=lambda block: block.splitlines()[-1][:40])
def test_readme_example_prints_its_documented_output(block):
    documented = block.strip().splitlines()[-1].split("# ", 1)[1]
    result = subprocess.run(
        [sys.executable, "-c", block], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == documented
