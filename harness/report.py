"""Human-readable views of a run: the summary table printed at the end."""

from __future__ import annotations

from typing import Any


def format_summary(summary: dict[str, Any]) -> str:
    """A table of every dataset: status, headline metrics, time and throughput."""
    rows = [("dataset", "status", "metrics", "time_s", "req/s", "tok/s")]
    for name, d in summary["datasets"].items():
        shown = {k: v for k, v in d["metrics"].items() if "stderr" not in k}
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in shown.items()) or "-"
        status = d["status"] if d["status"] == "ok" else f"FAILED: {d['error_type']}"
        rows.append(
            (
                name,
                status,
                metrics,
                f"{d['eval_time_s']:.2f}",
                f"{d['requests_per_s']:.1f}",
                f"{d['tokens_per_s']:.0f}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    head = (
        f"model {summary['model']} | strategy {summary['strategy']} | "
        f"load {summary['load_time_s']:.1f}s | total {summary['total_time_s']:.1f}s"
    )
    return "\n".join([head, *lines, f"results: {summary['run_dir']}"])
