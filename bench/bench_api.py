"""Benchmark of the GraphQL API: latency percentiles and throughput under a concurrent load.

    # a lake of N loans made from a lake the batch wrote (rows replicated with new ids, delta-rs only)
    .venv/bin/python bench/bench_api.py scale --from demo/lake --loans 1000000 --out bench/out/lake1m
    # serve it and load it (loopback only, bounded in time and requests)
    .venv/bin/python bench/bench_api.py load --lake bench/out/lake1m --seconds 20 --connections 8
    # the engine comparison behind docs/api.md (DuckDB vs Polars vs pre-encoded numpy)
    .venv/bin/python bench/bench_api.py engines --lake bench/out/lake1m

`load` starts `postloan serve` as a child process on 127.0.0.1, waits until the lake is loaded,
then runs each scenario with a closed-loop load generator (asyncio, raw HTTP/1.1 keep-alive
connections, one request in flight per connection) in this process, and reports p50/p95/p99
latency as the client sees it, requests per second, errors, and the server's resident memory.
Nothing here is a test: the suite never asserts on time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# ------------------------------------------------------------------------------------------------
# scale: a big lake from a small one


def scale(source: Path, loans: int, out: Path) -> None:
    """Replicate the latest served date of `source` to `loans` rows (new loan and borrower ids)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from deltalake import DeltaTable, write_deltalake

    from api.lake import build_catalog
    from schemas.lake import RUN_LEDGER

    ledger = DeltaTable(source / RUN_LEDGER.name)
    catalog = build_catalog(ledger.version(), ledger.to_pyarrow_table().to_pylist())
    if catalog.latest_date is None:
        raise SystemExit(f"{source}: no SUCCEEDED run")
    run = catalog.served[catalog.latest_date]
    day = run.as_of_date.isoformat()
    parts = [("as_of_date", "=", day)]
    snapshot = DeltaTable(source / "loan_snapshot", version=run.table_versions["loan_snapshot"]).to_pyarrow_table(
        partitions=parts
    )
    borrowers_path = source / "borrowers"
    borrowers = None
    if (borrowers_path / "_delta_log").is_dir():
        borrowers = DeltaTable(borrowers_path, version=run.table_versions.get("borrowers")).to_pyarrow_table(
            partitions=parts
        )
    copies = -(-loans // snapshot.num_rows)
    out.mkdir(parents=True, exist_ok=True)
    print(f"scaling {snapshot.num_rows:,} loans of {day} x{copies} -> {loans:,} in {out}")
    written = 0
    loan_parts: list[pa.Table] = []
    borrower_parts: list[pa.Table] = []
    for k in range(copies):
        take = min(snapshot.num_rows, loans - written)
        if take <= 0:
            break
        chunk = snapshot.slice(0, take)
        suffix = f"-{k:04d}"
        chunk = chunk.set_column(
            chunk.schema.get_field_index("loan_id"),
            "loan_id",
            pc.binary_join_element_wise(chunk["loan_id"], suffix, ""),
        )
        chunk = chunk.set_column(
            chunk.schema.get_field_index("borrower_id"),
            "borrower_id",
            pc.binary_join_element_wise(chunk["borrower_id"], suffix, ""),
        )
        loan_parts.append(chunk)
        if borrowers is not None:
            wanted = pc.is_in(borrowers["borrower_id"], value_set=snapshot.slice(0, take)["borrower_id"])
            b = borrowers.filter(wanted)
            b = b.set_column(
                b.schema.get_field_index("borrower_id"),
                "borrower_id",
                pc.binary_join_element_wise(b["borrower_id"], suffix, ""),
            )
            borrower_parts.append(b)
        written += take
    write_deltalake(out / "loan_snapshot", pa.concat_tables(loan_parts), mode="overwrite", partition_by=["as_of_date"])
    if borrower_parts:
        write_deltalake(
            out / "borrowers", pa.concat_tables(borrower_parts), mode="overwrite", partition_by=["as_of_date"]
        )
    versions = {"loan_snapshot": DeltaTable(out / "loan_snapshot").version()}
    if borrowers is not None:
        versions["borrowers"] = DeltaTable(out / "borrowers").version()
    now = dt.datetime.now(dt.UTC)
    row: dict[str, Any] = {c.name: None for c in RUN_LEDGER.columns}
    row.update(
        run_id=f"bench-{loans}",
        as_of_date=run.as_of_date,
        status="SUCCEEDED",
        started_at=now,
        finished_at=now,
        config_hash="bench",
        code_version="bench",
    )
    for name in ("input_rows", "accepted_rows", "quarantined_rows", "output_rows", "summary"):
        row[name] = []
    row["table_versions"] = list(versions.items())
    ledger_schema = pa.schema(ledger.schema().to_arrow())
    write_deltalake(out / RUN_LEDGER.name, pa.Table.from_pylist([row], schema=ledger_schema), mode="overwrite")
    print(f"wrote {written:,} loans; versions {versions}")


# ------------------------------------------------------------------------------------------------
# load: server + closed-loop load generator


PORTFOLIO = "query($g: GroupBy!) { portfolio(groupBy: $g) { key label loanCount balance overdueBalance overdueRatio nplBalance nplRatio byClass { riskClass loanCount balance } } }"
LOANS = """query($f: LoanFilter, $after: String) { loans(first: 50, filter: $f, after: $after) { totalCount
  edges { cursor node { loanId branchId productCode officerId dpd bucket riskClass riskGrade riskReasons
  outstandingPrincipal borrower { name idNumber phone } } } pageInfo { hasNextPage endCursor } } }"""


def _request(host: str, port: int, path: str, token: str, query: str, variables: dict[str, Any]) -> bytes:
    body = json.dumps({"query": query, "variables": variables}).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: application/json\r\nAuthorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _worker(
    host: str,
    port: int,
    pick: Callable[[], bytes],
    stop_at: float,
    budget: list[int],
    out: list[float],
    errors: list[str],
    interval: float = 0.0,
) -> None:
    """One connection, one request in flight. With `interval`, requests are sent on a fixed
    schedule and latency counts from the scheduled time (a slow answer delays the next send, and
    that wait is counted: no coordinated omission)."""
    reader, writer = await asyncio.open_connection(host, port)
    scheduled = time.perf_counter() + random.random() * interval
    try:
        while time.perf_counter() < stop_at and budget[0] > 0:
            budget[0] -= 1
            request = pick()
            if interval:
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                started = scheduled
                scheduled += interval
            else:
                started = time.perf_counter()
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = await reader.readexactly(length)
            out.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 200") or b'"errors"' in body:
                errors.append(body[:200].decode(errors="replace"))
    finally:
        writer.close()


def run_load(
    host: str,
    port: int,
    pick: Callable[[], bytes],
    seconds: float,
    connections: int,
    max_requests: int,
    rate: float | None = None,
) -> dict[str, Any]:
    """Closed loop (as fast as the server answers) or, with `rate`, a fixed total request rate."""
    latencies: list[float] = []
    errors: list[str] = []
    budget = [max_requests]

    async def main() -> float:
        stop_at = time.perf_counter() + seconds
        started = time.perf_counter()
        await asyncio.gather(
            *[
                _worker(host, port, pick, stop_at, budget, latencies, errors, connections / rate if rate else 0.0)
                for _ in range(connections)
            ]
        )
        return time.perf_counter() - started

    elapsed = asyncio.run(main())
    ms = sorted(x * 1000 for x in latencies)

    def pct(p: float) -> float:
        return ms[min(len(ms) - 1, round(p * (len(ms) - 1)))] if ms else float("nan")

    return {
        "requests": len(ms),
        "seconds": round(elapsed, 2),
        "rps": round(len(ms) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(pct(0.50), 2),
        "p95_ms": round(pct(0.95), 2),
        "p99_ms": round(pct(0.99), 2),
        "max_ms": round(ms[-1], 2) if ms else None,
        "mean_ms": round(statistics.fmean(ms), 2) if ms else None,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def bench_conf(conf: Path, cache_mb: int | None, workers: int | None) -> Path:
    """A copy of the configuration folder with the benchmark's API overrides."""
    import shutil

    import yaml

    folder = Path(tempfile.mkdtemp(prefix="bench-conf-"))
    shutil.copytree(conf, folder, dirs_exist_ok=True)
    api_file = folder / "api.yaml"
    raw = yaml.safe_load(api_file.read_text(encoding="utf-8")) if api_file.is_file() else {}
    if cache_mb is not None:
        raw["response_cache_mb"] = cache_mb
    if workers is not None:
        raw["workers"] = workers
    api_file.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return folder


def load(
    lake: Path, seconds: float, connections: int, max_requests: int, port: int, conf: Path, rate: float | None
) -> dict[str, Any]:
    from deltalake import DeltaTable

    from api.auth import issue_token
    from api.settings import load_api_settings

    settings = load_api_settings(conf)
    secret = secrets.token_urlsafe(48)
    env = {**os.environ, settings.auth.secret_env: secret}
    host = "127.0.0.1"
    # The server writes its audit log (a line a request) to stderr: a file, never an unread pipe.
    server_log = tempfile.NamedTemporaryFile("w+", prefix="bench-api-server-", suffix=".log", delete=False)  # noqa: SIM115 (lives as long as the server)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobs.cli",
            "serve",
            "--lake",
            str(lake),
            "--host",
            host,
            "--port",
            str(port),
            "--conf",
            str(conf),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=server_log,
        text=True,
    )
    proc = psutil.Process(server.pid)
    results: dict[str, Any] = {
        "lake": str(lake),
        "connections": connections,
        "seconds_per_scenario": seconds,
        "response_cache_mb": settings.response_cache_mb,
        "workers": settings.workers,
    }

    def rss_mb() -> int:
        total = 0
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return round(total / 2**20)

    def cpu_seconds() -> float:
        total = 0.0
        for p in [proc, *proc.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    try:
        import httpx

        started = time.perf_counter()
        while True:
            try:
                if httpx.get(f"http://{host}:{port}/healthz", timeout=2).json()["status"] == "ok":
                    break
            except (httpx.HTTPError, ValueError):
                pass
            if server.poll() is not None or time.perf_counter() - started > 1800:
                server_log.seek(0)
                raise SystemExit(f"server did not start: {server_log.read()[-4000:]}")
            time.sleep(0.5)
        results["startup_load_seconds"] = round(time.perf_counter() - started, 1)
        results["server_rss_mb_loaded"] = rss_mb()

        auth = settings.auth
        key = secret.encode()
        hq = issue_token(key, auth, "HQ")
        snapshot = DeltaTable(lake / "loan_snapshot").to_pyarrow_table(
            columns=["tier1_branch_id", "tier2_branch_id", "product_code"]
        )
        results["loans"] = snapshot.num_rows
        tier1 = sorted({v for v in snapshot["tier1_branch_id"].to_pylist() if v})
        tier2 = sorted({v for v in snapshot["tier2_branch_id"].to_pylist() if v})
        products = sorted(set(snapshot["product_code"].to_pylist()))
        branch_tokens = [issue_token(key, auth, "BRANCH", b) for b in tier1]
        path = settings.path
        rng = random.Random(7)
        groupings = ["HQ", "TIER1_BRANCH", "TIER2_BRANCH", "BRANCH", "PRODUCT", "CHANNEL", "OFFICER"]
        portfolio_requests = [_request(host, port, path, hq, PORTFOLIO, {"g": g}) for g in groupings] + [
            _request(host, port, path, t, PORTFOLIO, {"g": g}) for t in branch_tokens for g in ("BRANCH", "PRODUCT")
        ]
        filters: list[dict[str, Any]] = []
        for b in tier2:
            filters.append({"branchId": b, "minDpd": 1})
        for p in products:
            filters.append({"productCode": p, "riskClass": "NORMAL"})
            filters.append({"productCode": p, "minDpd": 31})
        for b in tier1:
            filters.append({"branchId": b, "bucket": "M0"})
        loans_requests = [_request(host, port, path, hq, LOANS, {"f": f}) for f in filters] + [
            _request(host, port, path, t, LOANS, {"f": {"minDpd": 1}}) for t in branch_tokens
        ]
        scenarios: dict[str, Callable[[], bytes]] = {
            "portfolio": lambda: rng.choice(portfolio_requests),
            "loans_filtered_page_50": lambda: rng.choice(loans_requests),
            "mixed_80_20": lambda: rng.choice(portfolio_requests) if rng.random() < 0.8 else rng.choice(loans_requests),
        }
        peak = results["server_rss_mb_loaded"]
        for name, pick in scenarios.items():
            run_load(host, port, pick, min(3.0, seconds), connections, max_requests)  # warm-up
            cpu_before = cpu_seconds()
            results[name] = run_load(host, port, pick, seconds, connections, max_requests)
            served = results[name]["requests"]
            results[name]["server_cpu_ms_per_request"] = (
                round((cpu_seconds() - cpu_before) * 1000 / served, 2) if served else None
            )
            peak = max(peak, rss_mb())
            print(name, json.dumps(results[name]), flush=True)
            if rate:
                paced = f"{name}_at_{rate:g}_rps"
                cpu_before = cpu_seconds()
                results[paced] = run_load(host, port, pick, seconds, connections, max_requests, rate)
                served = results[paced]["requests"]
                results[paced]["server_cpu_ms_per_request"] = (
                    round((cpu_seconds() - cpu_before) * 1000 / served, 2) if served else None
                )
                peak = max(peak, rss_mb())
                print(paced, json.dumps(results[paced]), flush=True)
        results["server_rss_mb_peak"] = peak
        results["cpu_count"] = os.cpu_count()
        results["load_average_1m"] = round(os.getloadavg()[0], 2)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        server_log.close()
        Path(server_log.name).unlink(missing_ok=True)
    return results


# ------------------------------------------------------------------------------------------------
# engines: DuckDB vs Polars vs pre-encoded numpy on the two hot paths


def engines(lake: Path, repeat: int) -> dict[str, Any]:
    import bisect

    import duckdb
    import numpy as np
    import polars as pl
    import pyarrow as pa
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    table = DeltaTable(lake / "loan_snapshot").to_pyarrow_table()
    out: dict[str, Any] = {"rows": table.num_rows}

    def compare(candidates: dict[str, Callable[[], Any]], n: int = repeat) -> dict[str, dict[str, float]]:
        """Rounds interleave the candidates, so a busy machine slows them alike; min and median."""
        for fn in candidates.values():
            fn()
        times: dict[str, list[float]] = {name: [] for name in candidates}
        for _ in range(n):
            for name, fn in candidates.items():
                t = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t) * 1000)
        return {
            name: {"min_ms": round(min(xs), 2), "median_ms": round(statistics.median(xs), 2)}
            for name, xs in times.items()
        }

    con = duckdb.connect()
    con.execute("SET threads TO 2")
    con.register("raw", table)
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    out["sort_by_loan_id"] = compare(
        {
            "duckdb": lambda: con.sql("SELECT * FROM raw ORDER BY loan_id").to_arrow_table(),
            "polars": lambda: frame.sort("loan_id").to_arrow(),
        },
        5,
    )
    srt = con.sql("SELECT * FROM raw ORDER BY loan_id").to_arrow_table().combine_chunks()
    con.register("loans", srt)
    pdf = pl.from_arrow(srt)
    assert isinstance(pdf, pl.DataFrame)
    tier1 = sorted({v for v in srt["tier1_branch_id"].to_pylist() if v})[0]
    product = srt["product_code"][0].as_py()
    after = srt["loan_id"][srt.num_rows // 2].as_py()
    agg = "count(*), sum(outstanding_principal), sum(outstanding_principal) FILTER (WHERE dpd > 0)"
    # The load-time aggregation as api/store.py does it: the portfolio cube over int-coded columns.
    codes: dict[str, Any] = {"c": np.arange(srt.num_rows, dtype=np.int64), "dpd_pos": srt["dpd"].to_numpy() > 0}
    for name in ("branch_id", "product_code", "channel_id", "officer_id", "risk_class", "bucket"):
        codes[name] = np.asarray(pc.dictionary_encode(srt[name].combine_chunks()).indices.fill_null(-1))
    coded = pa.table(codes)
    coded_pl = pl.from_arrow(coded)
    assert isinstance(coded_pl, pl.DataFrame)
    con.register("coded", coded)
    cube_keys = [k for k in codes if k not in ("c",)]
    out["preaggregate_cube"] = compare(
        {
            "duckdb": lambda: con.sql(
                f"SELECT {', '.join(cube_keys)}, count(*) AS n, sum(c) AS bal FROM coded GROUP BY ALL"
            ).to_arrow_table(),
            "polars": lambda: coded_pl.group_by(cube_keys).agg(pl.len().alias("n"), pl.col("c").sum().alias("bal")),
        },
        10,
    )
    out["sort_by_loan_id"]["arrow_sort_indices_take"] = compare(
        {"arrow": lambda: table.take(pc.sort_indices(table.column("loan_id")))}, 3
    )["arrow"]

    def duck_page() -> Any:
        where = f"list_contains(branch_path, '{tier1}') AND product_code = '{product}' AND dpd > 0"
        rows = con.execute(f"SELECT * FROM loans WHERE {where} AND loan_id > ? ORDER BY loan_id LIMIT 51", [after])
        return rows.fetchall(), con.sql(f"SELECT count(*) FROM loans WHERE {where}").fetchall()[0]

    def polars_page() -> Any:
        f = pl.col("branch_path").list.contains(tier1) & (pl.col("product_code") == product) & (pl.col("dpd") > 0)
        return pdf.select(f.sum()).item(), pdf.filter(f & (pl.col("loan_id") > after)).head(51).to_dicts()

    enc_t1 = pc.dictionary_encode(srt["tier1_branch_id"].combine_chunks())
    t1_codes, t1_code = np.asarray(enc_t1.indices), enc_t1.dictionary.to_pylist().index(tier1)
    enc_p = pc.dictionary_encode(srt["product_code"].combine_chunks())
    p_codes, p_code = np.asarray(enc_p.indices), enc_p.dictionary.to_pylist().index(product)
    dpd = srt["dpd"].to_numpy()
    ids = srt["loan_id"].combine_chunks()

    class Keys:
        def __len__(self) -> int:
            return len(ids)

        def __getitem__(self, i: int) -> Any:
            return ids[i].as_py()

    def numpy_page() -> Any:
        m = (t1_codes == t1_code) & (p_codes == p_code) & (dpd > 0)
        start = bisect.bisect_right(Keys(), after)
        idx = np.flatnonzero(m[start:])[:51] + start
        return int(np.count_nonzero(m)), srt.take(idx).to_pylist()

    out["filtered_page_50"] = compare({"duckdb": duck_page, "polars": polars_page, "numpy": numpy_page})

    def duck_group() -> Any:
        return con.sql(
            f"SELECT product_code, {agg} FROM loans WHERE list_contains(branch_path, '{tier1}') GROUP BY 1"
        ).fetchall()

    def polars_group() -> Any:
        return (
            pdf.filter(pl.col("branch_path").list.contains(tier1))
            .group_by("product_code")
            .agg(pl.len(), pl.col("outstanding_principal").sum())
            .to_dicts()
        )

    out["adhoc_portfolio_group_by"] = compare({"duckdb": duck_group, "polars": polars_group})
    return out


# ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("scale")
    s.add_argument("--from", dest="source", type=Path, required=True)
    s.add_argument("--loans", type=int, required=True)
    s.add_argument("--out", type=Path, required=True)
    ld = sub.add_parser("load")
    ld.add_argument("--lake", type=Path, required=True)
    ld.add_argument("--seconds", type=float, default=20.0, help="per scenario (bounded)")
    ld.add_argument("--connections", type=int, default=8)
    ld.add_argument("--max-requests", type=int, default=200_000, help="per scenario (bounded)")
    ld.add_argument("--port", type=int, default=18080)
    ld.add_argument("--conf", type=Path, default=REPO / "conf")
    ld.add_argument("--json", type=Path, default=None, help="also write the results here")
    ld.add_argument("--cache-mb", type=int, default=None, help="override response_cache_mb (0 = off)")
    ld.add_argument("--workers", type=int, default=None, help="override workers")
    ld.add_argument("--rate", type=float, default=None, help="also run each scenario at this fixed rate (req/s)")
    e = sub.add_parser("engines")
    e.add_argument("--lake", type=Path, required=True)
    e.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args(argv)
    if args.command == "scale":
        scale(args.source, args.loans, args.out)
        return 0
    if args.command == "load":
        conf = bench_conf(args.conf, args.cache_mb, args.workers)
        results = load(args.lake, args.seconds, args.connections, args.max_requests, args.port, conf, args.rate)
    else:
        results = engines(args.lake, args.repeat)
    text = json.dumps(results, indent=2)
    print(text)
    if getattr(args, "json", None):
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
