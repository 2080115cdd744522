"""``python -m bench.fuzz``: runs the command in cli.py. The guard matters: worker processes
(started by spawning) import this module again under another name."""

import sys

from bench.fuzz.cli import main

if __name__ == "__main__":
    sys.exit(main())
