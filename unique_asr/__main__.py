"""`python -m unique_asr ...` runs the unique-transcribe command line."""

import sys

from unique_asr.cli import main

sys.exit(main())
