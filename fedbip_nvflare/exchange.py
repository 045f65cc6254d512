"""What travels between the server and the sites: fp32 numpy copies of named tensors (NVFlare's default format)."""

from typing import Any, Dict, Mapping

import torch


def to_numpy(params: Mapping[str, Any]) -> Dict[str, Any]:
    """fp32 numpy copies of tensors or arrays; a copy never shares memory with its source."""
    return {n: torch.as_tensor(t).detach().float().cpu().numpy().copy() for n, t in params.items()}
