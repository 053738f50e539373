"""``python -m attn`` is the ``attn`` command."""

import sys

from attn.cli import main

sys.exit(main())
