"""``fedbip`` command line: site set-up helpers."""

import argparse
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``fedbip`` command."""
    parser = argparse.ArgumentParser(prog="fedbip", description="FedBip for NVIDIA FLARE")
    sub = parser.add_subparsers(dest="command", required=True)
    allow = sub.add_parser("allow-list", help="allow FedBip's components in an NVFlare (simulator) workspace")
    allow.add_argument("workspace", help="site or simulator workspace folder (its local/resources.json is edited)")
    sub.add_parser(
        "fetch-assets", help="fetch the offline model and datasets (same as python -m fedbip_nvflare.assets fetch)"
    )
    args = parser.parse_args(argv)
    if args.command == "allow-list":
        from fedbip_nvflare.recipes.fedbip import allow_fedbip_components

        print(f"allow-listed fedbip_nvflare. in {allow_fedbip_components(args.workspace)}")
    elif args.command == "fetch-assets":
        from fedbip_nvflare import assets

        assets.fetch()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
