"""Process-level runtime settings: seeds, thread counts and a description of the machine.

Every recipe calls :func:`seed_everything` first, so two runs of the same config on the same
machine give the same numbers; :func:`describe_machine` goes into ``versions.json`` so results can
be compared across machines.
"""

from __future__ import annotations

import os
import platform
import random
from typing import Any

import numpy as np
import torch

from mmdistill.errors import ConfigError


def seed_everything(seed: int, *, deterministic: bool = False) -> torch.Generator:
    """Seed Python's ``random``, NumPy and torch (CPU and every CUDA device).

    Args:
        seed: any integer in ``[0, 2**32)`` (NumPy's limit).
        deterministic: also ask torch for deterministic kernels (``warn_only``: ops without a
            deterministic implementation warn instead of failing) and turn off cuDNN autotuning.
            Slower; only needed for bit-exact GPU reruns, CPU kernels are deterministic anyway.

    Returns:
        A fresh ``torch.Generator`` seeded with ``seed``, for samplers and data loaders that
        should not share the global generator.
    """
    if not 0 <= int(seed) < 2**32:
        raise ConfigError(f"seed must be in [0, 2**32), got {seed}; pick a smaller non-negative integer")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        # cuBLAS needs this workspace setting for deterministic matmuls (read when CUDA initializes).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def set_threads(n: int | None) -> int:
    """Set torch's intra-op thread count; ``None`` keeps the current setting.

    Args:
        n: number of threads (>= 1), or None.

    Returns:
        The thread count in effect afterwards.
    """
    if n is not None:
        if int(n) < 1:
            raise ConfigError(f"threads must be >= 1 (or null for torch's default), got {n}")
        torch.set_num_threads(int(n))
    return torch.get_num_threads()


def describe_machine() -> dict[str, Any]:
    """What a benchmark number depends on: CPU count, threads, versions, platform, accelerator.

    Returns:
        A JSON-serializable dict.
    """
    try:
        affinity = len(os.sched_getaffinity(0))  # CPUs this process may run on (containers, taskset)
    except AttributeError:  # not available on macOS / Windows
        affinity = os.cpu_count() or 1
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["cuda_version"] = torch.version.cuda
    return info
