"""`python -m unique_asr.corpus` and `torchrun --nproc_per_node N -m unique_asr.corpus`."""

import sys

from unique_asr.corpus.cli import main

sys.exit(main())
