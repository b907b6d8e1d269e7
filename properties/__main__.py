"""``python -m properties``: the gpt-properties command (properties.cli)."""
import sys

from properties.cli import main

sys.exit(main())
