"""The README's composition example runs and prints what the README says it prints."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_prints_its_documented_output():
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.DOTALL).group(1)
    documented = block.strip().splitlines()[-1].split("# ", 1)[1]
    result = subprocess.run(
        [sys.executable, "-c", block], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == documented
