"""Suite site names: ``site-1``, ``site-2``, ... and the 0-based index a suite derives a site's data from."""

import re

_SITE = re.compile(r"site-([1-9]\d*)")


def site_names(num_clients: int) -> list[str]:
    """Return the site names ``["site-1", ..., "site-N"]``.

    Args:
        num_clients: Number of clients N (>= 1).

    Raises:
        ValueError: If ``num_clients`` < 1.
    """
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    return [f"site-{k}" for k in range(1, num_clients + 1)]


def site_index(site: str) -> int:
    """The 0-based index k - 1 of ``"site-k"``.

    Raises:
        ValueError: ``site`` is not ``site-k`` with k >= 1.
    """
    match = _SITE.fullmatch(site)
    if match is None:
        raise ValueError(f"unknown site {site!r}; valid sites are 'site-1', 'site-2', ... (site-k, k >= 1)")
    return int(match.group(1)) - 1
