"""`python -m edgeft.runtime ...` = `edgeft-runtime ...` (for devices whose PATH lacks the venv's bin)."""
import sys

from edgeft.runtime.cli import main

sys.exit(main())
