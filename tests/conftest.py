"""Shared test set-up.

Without a CUDA device the Triton kernels run under Triton's CPU interpreter; the switch must be
set before `triton.jit` decorates any kernel, so it happens here, before any test module imports
`roofbench.kernels`.
"""

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none is visible to torch")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
