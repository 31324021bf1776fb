"""The `postloan` command line."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from jobs.config import ConfigError, load_config

# The repository's conf/ when run from a checkout; POSTLOAN_CONF in an image or on a cluster.
DEFAULT_CONF = Path(os.environ.get("POSTLOAN_CONF", Path(__file__).resolve().parent.parent / "conf"))


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="postloan", description="Post-loan management batch and API")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write a generated sample loan book to a landing folder")
    gen.add_argument("--loans", type=int, required=True, help="number of loans")
    gen.add_argument("--as-of", type=_date, required=True, help="extract date YYYY-MM-DD")
    gen.add_argument("--seed", type=int, default=7, help="random seed (same seed, same book)")
    gen.add_argument("--landing", type=Path, required=True, help="landing folder to write")
    gen.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    gen.add_argument(
        "--product-mix",
        default=None,
        help="the book's products as CODE=SHARE,... (e.g. CONSUMER_ONLINE=0.55,AGRI=0.3,CONSUMER=0.15); "
        "default: the generator's own mix",
    )

    nightly = sub.add_parser("nightly", help="run the nightly batch for a business date")
    nightly.add_argument("--as-of", type=_date, required=True, help="business date YYYY-MM-DD")
    nightly.add_argument("--landing", type=Path, required=True, help="landing folder (bank extracts)")
    nightly.add_argument("--lake", type=Path, required=True, help="lake folder (Delta tables)")
    nightly.add_argument("--conf", type=Path, default=DEFAULT_CONF, help="configuration folder")
    nightly.add_argument("--profile", default=None, help="rule profile (overrides conf)")
    nightly.add_argument(
        "--spark-profile",
        default=None,
        help="Spark settings under conf/spark/ (overrides conf): local, large or cluster",
    )
    nightly.add_argument("--log-file", type=Path, default=None, help="JSON-lines event log (overrides conf)")

    backfill = sub.add_parser("backfill", help="rerun the nightly batch for every date of a range, in order")
    backfill.add_argument("--from", dest="start", type=_date, default=None, help="first business date YYYY-MM-DD")
    backfill.add_argument("--to", dest="end", type=_date, required=True, help="last business date YYYY-MM-DD")
    backfill.add_argument("--every", choices=("day", "month-end"), default="day", help="which dates of the range")
    backfill.add_argument(
        "--catch-up",
        action="store_true",
        help="only the dates after the newest one the lake serves (--from: where an empty lake starts)",
    )
    backfill.add_argument("--landing", type=Path, required=True, help="landing folder (bank extracts)")
    backfill.add_argument("--lake", type=Path, required=True, help="lake folder (Delta tables)")
    backfill.add_argument("--conf", type=Path, default=DEFAULT_CONF, help="configuration folder")
    backfill.add_argument("--profile", default=None, help="rule profile (overrides conf)")
    backfill.add_argument(
        "--spark-profile",
        default=None,
        help="Spark settings under conf/spark/ (overrides conf): local, large or cluster",
    )
    backfill.add_argument("--log-file", type=Path, default=None, help="JSON-lines event log (overrides conf)")

    bundle = sub.add_parser("bundle", help="write the zip of the batch's code for spark-submit --py-files")
    bundle.add_argument("--out", type=Path, default=Path("dist/postloan-jobs.zip"), help="zip file to write")

    maintain = sub.add_parser("maintain", help="OPTIMIZE recent dates, re-pin them, VACUUM (under the lake lock)")
    maintain.add_argument("--lake", type=Path, required=True, help="lake folder (Delta tables)")
    maintain.add_argument("--conf", type=Path, default=DEFAULT_CONF, help="configuration folder (operations.yaml)")
    maintain.add_argument("--log-file", type=Path, default=None, help="JSON-lines event log (overrides conf)")

    demo = sub.add_parser("demo", help="generate a sample book, run the batch, serve the API")
    demo.add_argument("--dir", type=Path, default=Path("demo"), help="where landing/ and lake/ go")
    demo.add_argument("--loans", type=int, default=20000)
    demo.add_argument("--as-of", type=_date, default=dt.date(2026, 10, 31))
    demo.add_argument("--conf", type=Path, default=DEFAULT_CONF)
    demo.add_argument("--no-serve", action="store_true", help="stop after the batch")

    serve = sub.add_parser("serve", help="serve the lake's GraphQL API (needs POSTLOAN_JWT_SECRET)")
    serve.add_argument("--lake", type=Path, required=True, help="lake folder (Delta tables)")
    serve.add_argument("--host", default=None, help="interface to listen on (conf/api.yaml: host)")
    serve.add_argument("--port", type=int, default=None, help="port (conf/api.yaml: port)")
    serve.add_argument("--conf", type=Path, default=DEFAULT_CONF, help="configuration folder (api.yaml)")
    serve.add_argument("--graphiql", action="store_true", default=None, help="serve the GraphiQL IDE on GET")

    token = sub.add_parser("token", help="print a signed API token (needs POSTLOAN_JWT_SECRET)")
    token.add_argument("--role", choices=("HQ", "BRANCH"), required=True)
    token.add_argument("--branch", default=None, help="BRANCH: the branch whose subtree the caller sees")
    token.add_argument("--pii", action="store_true", help="allow unmasked personal data")
    token.add_argument("--subject", default=None, help="who the token is for (the sub claim)")
    token.add_argument("--conf", type=Path, default=DEFAULT_CONF, help="configuration folder (api.yaml)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "generate":
            from jobs.generate import generate_landing, parse_product_mix
            from jobs.spark import build_session

            try:
                mix = None if args.product_mix is None else parse_product_mix(args.product_mix)
            except ValueError as exc:
                print(f"postloan generate: --product-mix: {exc}", file=sys.stderr)
                return 2
            spark = build_session(load_config(DEFAULT_CONF).spark)
            counts = generate_landing(
                spark, args.loans, args.as_of, args.seed, args.landing, args.format, product_mix=mix
            )
            for table, rows in counts.items():
                print(f"{table:24s} {rows:>12,d}")
            return 0
        if args.command == "nightly":
            from jobs.pipeline import run_nightly_command

            return run_nightly_command(
                args.as_of, args.landing, args.lake, args.conf, args.profile, args.log_file, args.spark_profile
            )
        if args.command == "backfill":
            from jobs.pipeline import backfill_dates, run_dates_command

            if args.catch_up:
                # The dates are worked out from the ledger once the lake is open.
                catch_up = (args.start, args.every)
                return run_dates_command(
                    [args.end],
                    args.landing,
                    args.lake,
                    args.conf,
                    args.profile,
                    args.log_file,
                    catch_up,
                    spark_profile=args.spark_profile,
                )
            if args.start is None:
                print("postloan: backfill needs --from (or --catch-up)", file=sys.stderr)
                return 2
            try:
                dates = backfill_dates(args.start, args.end, args.every)
            except ValueError as exc:
                print(f"postloan: {exc}", file=sys.stderr)
                return 2
            if not dates:
                print(f"postloan: no {args.every} date between {args.start} and {args.end}", file=sys.stderr)
                return 2
            return run_dates_command(
                dates, args.landing, args.lake, args.conf, args.profile, args.log_file, spark_profile=args.spark_profile
            )
        if args.command == "bundle":
            from jobs.bundle import build_py_files

            print(build_py_files(args.out))
            return 0
        if args.command == "maintain":
            from jobs.maintain import maintain_command

            return maintain_command(args.lake, args.conf, args.log_file)
        if args.command == "demo":
            from jobs.pipeline import run_demo

            return run_demo(args.dir, args.loans, args.as_of, args.conf, serve=not args.no_serve)
        if args.command == "serve":
            from api.server import serve

            return serve(args.lake, args.conf, host=args.host, port=args.port, graphiql=args.graphiql)
        if args.command == "token":
            return _token(args.role, args.branch, args.pii, args.subject, args.conf)
    except ConfigError as exc:
        print(f"postloan: configuration refused: {exc}", file=sys.stderr)
        return 2
    return 1


def _token(role: str, branch: str | None, pii: bool, subject: str | None, conf: Path) -> int:
    from api.auth import SecretError, issue_token, secret_from_env
    from api.settings import load_api_settings

    if role == "BRANCH" and not branch:
        print("postloan: a BRANCH token needs --branch", file=sys.stderr)
        return 2
    if role == "HQ" and branch:
        print("postloan: an HQ token sees the whole bank; drop --branch", file=sys.stderr)
        return 2
    settings = load_api_settings(conf)
    try:
        secret = secret_from_env(settings.auth)
    except SecretError as exc:
        print(f"postloan: {exc}", file=sys.stderr)
        return 2
    print(issue_token(secret, settings.auth, "BRANCH" if role == "BRANCH" else "HQ", branch, pii, subject))
    return 0


if __name__ == "__main__":
    sys.exit(main())
