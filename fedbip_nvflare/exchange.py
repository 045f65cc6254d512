"""What travels between the server and the sites: fp32 numpy copies of named tensors (NVFlare's default format),
or torch tensors where the job exchanges PyTorch (NVFlare's ``ExchangeFormat.PYTORCH``)."""

from typing import Any, Dict, Mapping

import torch


def to_numpy(params: Mapping[str, Any]) -> Dict[str, Any]:
    """fp32 numpy copies of tensors or arrays; a copy never shares memory with its source."""
    return {n: torch.as_tensor(t).detach().float().cpu().numpy().copy() for n, t in params.items()}


def in_format_of(params: Mapping[str, Any], received: Mapping[str, Any]) -> Dict[str, Any]:
    """``params`` in the container type the site received: fp32 torch tensors if ``received`` held any, else numpy.

    A job that exchanges PyTorch (its persistor's and the workflow's tensors are torch) gets torch back.
    """
    if any(isinstance(v, torch.Tensor) for v in received.values()):
        return {n: torch.as_tensor(t).detach().float().cpu().clone() for n, t in params.items()}
    return to_numpy(params)
