"""``fedbip`` command line: site set-up helpers, the results report, predictions with a personalized model."""

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
    report = sub.add_parser(
        "report", help="per-client table and PNG plots of the runs in a workspace or results folder"
    )
    report.add_argument("path", help="job workspace, job result folder or benchmark output folder")
    report.add_argument("--output", default=None, help="folder for the plots (default: <path>/report)")
    predict = sub.add_parser("predict", help="predict labels with a site's personalized adapter and private head")
    predict.add_argument("--adapter", required=True, help="a site's personalized_adapter folder")
    predict.add_argument("--input", required=True, help="texts: .txt (one per line), .csv/.tsv or .jsonl with 'text'")
    predict.add_argument("--output", default=None, help="write predictions to this .jsonl or .csv file")
    predict.add_argument("--model", default=None, help="base model id or folder (default: the one in labels.json)")
    predict.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args(argv)
    if args.command == "allow-list":
        from fedbip_nvflare.recipes.fedbip import allow_fedbip_components

        print(f"allow-listed fedbip_nvflare. in {allow_fedbip_components(args.workspace)}")
    elif args.command == "fetch-assets":
        from fedbip_nvflare import assets

        assets.fetch()
    elif args.command == "report":
        from fedbip_nvflare.report import write_report

        try:
            print(write_report(args.path, args.output))
        except FileNotFoundError as e:
            print(f"fedbip report: {e}")
            return 1
    elif args.command == "predict":
        from fedbip_nvflare.predict import format_predictions, predict_file, write_predictions

        try:
            rows = predict_file(args.adapter, args.input, model=args.model, max_length=args.max_length)
        except (FileNotFoundError, ValueError) as e:
            print(f"fedbip predict: {e}")
            return 1
        print(format_predictions(rows))
        if args.output:
            print(f"predictions written to {write_predictions(rows, args.output)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
