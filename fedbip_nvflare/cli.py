"""``fedbip`` command line: site set-up helpers, the results report, predictions with a personalized model."""

import argparse
import sys
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
    predict = sub.add_parser(
        "predict",
        help="labels (classifiers) or answers (causal LMs) from a site's personalized model folder",
        description="A classifier's folder (labels.json) labels texts or images; a causal LM's (generation.json) "
        "answers instructions, scored when the input has reference outputs.",
    )
    predict.add_argument("--adapter", required=True, help="a site's personalized_adapter folder")
    predict.add_argument(
        "--input",
        required=True,
        help="text classifier: texts in .txt (one per line), .csv/.tsv or .jsonl with 'text'; image classifier: an "
        "image or a folder of images; causal LM: .jsonl with 'instruction', optional 'input' and 'output'",
    )
    predict.add_argument("--output", default=None, help="write predictions to this .jsonl or .csv file")
    predict.add_argument("--model", default=None, help="base model (default: the one the folder names)")
    predict.add_argument("--max-length", type=int, default=None, help="token limit (default: 128 / the training one)")
    predict.add_argument(
        "--max-new-tokens", type=int, default=None, help="causal LM: answer length (default: training's)"
    )
    predict.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="causal LM: weight dtype")
    args = parser.parse_args(argv)
    if args.command == "allow-list":
        from fedbip_nvflare.recipes.fedbip import allow_fedbip_components

        print(f"allow-listed fedbip_nvflare. in {allow_fedbip_components(args.workspace)}")
    elif args.command == "fetch-assets":
        from fedbip_nvflare import assets

        assets.fetch()
    elif args.command == "report":
        from fedbip_nvflare.report import run_failures, write_report

        try:
            print(write_report(args.path, args.output))
            failures = run_failures(args.path)
        except FileNotFoundError as e:
            print(f"fedbip report: {e}")
            return 1
        if failures:
            print(f"fedbip report: FAILED {'; '.join(failures)}", file=sys.stderr)
            return 1
    elif args.command == "predict":
        return _predict(args)
    return 0


def _predict(args: argparse.Namespace) -> int:
    """``fedbip predict``: a causal LM's folder (``generation.json``) answers; an image or text classifier's labels."""
    import os

    from fedbip_nvflare.client.causal_lm import GENERATION_FILE
    from fedbip_nvflare.predict import (
        OUTPUT_EXTENSIONS,
        PREDICTION_FIELDS,
        format_predictions,
        predict_file,
        write_predictions,
    )
    from fedbip_nvflare.predict_images import IMAGE_PREDICTION_FIELDS, is_image_classifier, predict_images

    if args.output and os.path.splitext(args.output)[1].lower() not in OUTPUT_EXTENSIONS:
        print(f"fedbip predict: --output {args.output}: use a file ending in {' or '.join(OUTPUT_EXTENSIONS)}")
        return 1
    try:
        if os.path.isfile(os.path.join(args.adapter, GENERATION_FILE)):
            from fedbip_nvflare.generate import format_responses, generate_file, response_fields

            rows, scores = generate_file(
                args.adapter,
                args.input,
                model=args.model,
                max_length=args.max_length,
                max_new_tokens=args.max_new_tokens,
                precision=args.precision,
            )
            print(format_responses(rows, scores))
            fields = response_fields(rows)
        elif is_image_classifier(args.adapter):
            rows = predict_images(args.adapter, args.input, model=args.model)
            print(format_predictions(rows, item="image"))
            fields = IMAGE_PREDICTION_FIELDS
        else:
            rows = predict_file(args.adapter, args.input, model=args.model, max_length=args.max_length or 128)
            print(format_predictions(rows))
            fields = PREDICTION_FIELDS
        if args.output:
            print(f"predictions written to {write_predictions(rows, args.output, fields)}")
    except (FileNotFoundError, ValueError) as e:
        print(f"fedbip predict: {e}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
