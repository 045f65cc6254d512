"""Server side of FedBip: the controller and the per-client state store."""

from fedbip_nvflare.server.state import ClientStateStore

__all__ = ["ClientStateStore"]
