"""Suite-wide setup: without CUDA, Triton kernels run under the interpreter. Triton reads TRITON_INTERPRET
when a kernel is decorated (module import), so it must be set before any test module imports unique_asr."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
