"""The `lwd gateway` and `lwd bench gateway` command handlers (registered in lwd.cli)."""

from __future__ import annotations

import time

from lwd.gateway.config import (
    GatewayBenchConfig,
    GatewayConfig,
    TokenAddConfig,
    TokenListConfig,
    TokenRevokeConfig,
)


def cmd_gateway_serve(config: GatewayConfig) -> int:
    from lwd.gateway.server import serve

    serve(config)
    return 0


def cmd_gateway_token(config: TokenAddConfig | TokenListConfig | TokenRevokeConfig) -> int:
    from lwd.gateway.tokens import TokenBook

    book = TokenBook(config.dir)
    if isinstance(config, TokenAddConfig):
        token = book.add(config.robot_id)
        print(token)
        print(
            f"# token for robot {config.robot_id}: shown this once, stored only hashed in {book.path}",
            flush=True,
        )
    elif isinstance(config, TokenRevokeConfig):
        revoked = book.revoke(config.robot_id, config.token_id)
        print(f"revoked {len(revoked)} token(s) of robot {config.robot_id}: {', '.join(revoked)}")
    else:
        print(f"{'robot':24s} {'token id':18s} {'created':20s} status")
        for entry in book.entries():
            created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.created_at))
            status = "active" if entry.revoked_at is None else "revoked"
            print(f"{entry.robot_id:24s} {entry.token_id:18s} {created:20s} {status}")
    return 0


def cmd_bench_gateway(config: GatewayBenchConfig) -> int:
    from lwd.gateway.bench import bench_gateway

    report = bench_gateway(config)
    print("client-side latency [server-side]; CPU cores used by the gateway / by the simulated robots")
    for row in report["levels"]:
        print(f"{row['robots']:5d} robots (load average {row['load_average']:.1f})")
        for kind, unit in (("upload", "uploads"), ("act", "act calls")):
            r = row[kind]
            extra = f"batch {r['mean_batch']:.1f}" if kind == "act" else f"group commit {r['mean_group_commit']:.1f}"
            print(
                f"   {r['per_s']:7.1f} {unit}/s  P50 {r['p50_ms']:7.1f} ms  P99 {r['p99_ms']:7.1f} ms  "
                f"[{r['server_p50_ms'] or 0:.1f} / {r['server_p99_ms'] or 0:.1f} ms]  "
                f"cores {r.get('server_cpu_cores', float('nan')):.2f} / {r['client_cpu_cores']:.2f}  {extra}  "
                f"{r['errors']} errors"
            )
    paced = report.get("paced")
    if paced:
        print(
            f"paced: {paced['robots']} robots, one upload each per {paced['interval_s']:.0f} s: "
            f"{paced['uploads']} uploads, P50 {paced['p50_ms']:.1f} ms, P99 {paced['p99_ms']:.1f} ms "
            f"(goal P99 < 1000 ms), {paced['errors']} errors"
        )
    print(f"written to {config.out}")
    return 0
