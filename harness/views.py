"""Human-readable views of a run: the plan printed before it, the summary table at the end."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.planning.plan import Plan


def format_summary(summary: dict[str, Any], breakdown: bool = False) -> str:
    """A table of every dataset: status, headline metrics, time and throughput; a dataset taken
    from the result store says ``reused``, with no time or throughput of this run.

    A dataset that is an lm-eval group says how many subtasks it has; with ``breakdown`` (the
    log file, ``verbose=true``) each of its subgroups and subtasks follows on a row of its own,
    indented under the group it belongs to; without, one line says where they are.
    """
    rows = [("dataset", "status", "metrics", "time_s", "req/s", "tok/s")]
    grouped = []
    reused = []
    for name, d in summary["datasets"].items():
        status = d["status"] if d["status"] == "ok" else f"FAILED: {d['error_type']}"
        timing = (
            f"{d['eval_time_s']:.2f}",
            f"{d['requests_per_s']:.1f}",
            f"{d['tokens_per_s']:.0f}",
        )
        if d["status"] == "ok" and d.get("resumed"):  # its figures are the run that stored it
            status, timing = "reused", ("-", "-", "-")
            reused.append(name)
        metrics = _metrics_text(d["metrics"])
        if d["status"] == "ok" and (d.get("evaluation") or {}).get("predict_only"):
            metrics = "predict-only: outputs in samples/"  # lm-eval computed no metric
        tree = d.get("group_subtasks") or {}
        subtasks = d.get("subtasks") or {}
        shown = f"{name} ({group_size(tree, list(subtasks))})" if tree else name
        rows.append((shown, status, metrics, *timing))
        if tree:
            grouped.append(name)
        if tree and breakdown:
            depth = {d["task"]: 0}
            parent = {m: g for g, ms in tree.items() for m in ms}
            for member, metrics in subtasks.items():  # depth-first: a group before its members
                depth[member] = depth.get(parent.get(member, d["task"]), 0) + 1
                rows.append(("  " * depth[member] + member, "", _metrics_text(metrics), "", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    if grouped and not breakdown:
        lines.append(
            f"subgroups and subtasks of {', '.join(grouped)}: in harness.log and summary.json "
            "(verbose=true shows them here)"
        )
    if reused:
        lines.append(
            f"reused: {', '.join(reused)} taken from the result store, not evaluated in this run "
            "(rerun=true evaluates again)"
        )
    foot = (
        f"model {summary['model']} | strategy {summary['strategy']} | "
        f"load {summary['load_time_s']:.1f}s | total {summary['total_time_s']:.1f}s | "
        f"results: {summary['run_dir']}"
    )
    return "\n".join([*lines, foot])


def group_size(tree: dict[str, list[str]], members: list[str]) -> str:
    """``3 subtasks in 1 subgroup``: a group dataset's size, from its tree (``group_subtasks``:
    each group under it with its members) and the names of every member under it."""
    subgroups = sum(1 for m in members if m in tree)
    subtasks = len(members) - subgroups
    text = f"{subtasks} subtask{'' if subtasks == 1 else 's'}"
    if subgroups:
        text += f" in {subgroups} subgroup{'' if subgroups == 1 else 's'}"
    return text


def _metrics_text(metrics: dict[str, float]) -> str:
    """``acc=0.9, acc_norm=0.85``: the figures, their stderr left out; ``-`` when none."""
    shown = {k: v for k, v in metrics.items() if "stderr" not in k}
    return ", ".join(f"{k}={v:.4g}" for k, v in shown.items()) or "-"


def verdict_of(plan: Plan) -> str:
    """FITS, DOES NOT FIT, or REFUSED where the config itself breaks a rule (bad input)."""
    if plan.bad_input:
        return "REFUSED (bad input)"
    return "FITS" if plan.fits else "DOES NOT FIT"


def format_plan(plan: Plan, problems: bool = True) -> str:
    """The plan as a small table, then its explanation, notes and (unless ``problems`` is
    false: a run raises them in its ``error:`` block) its problems."""
    if plan.device == "remote":
        return _served_plan(plan, table=True, problems=problems)
    m = plan.memory
    unit = "per GPU" if plan.device == "cuda" else "of host memory"
    verdict = verdict_of(plan)
    executor = "" if plan.executor_backend == "none" else f", executor {plan.executor_backend}"
    gpus = (
        f"tp {plan.tensor_parallel_size} x pp {plan.pipeline_parallel_size} x dp "
        f"{plan.data_parallel_size} = {plan.gpus_needed} GPU(s) on {plan.nodes_needed} node(s) "
        f"(tier has {plan.gpus_available})"
        if plan.device == "cuda"
        else _cpu_parallel(plan)
    )
    seqs = m.kv_capacity_tokens // plan.max_model_len if plan.max_model_len else 0
    rows = [
        ("engine", f"{plan.engine} on {plan.device}{executor}, {plan.dtype}"),
        ("replicas", _replicas(plan)),
        ("at once", f"{plan.datasets_at_once} dataset(s) evaluated at once against the engine"),
        ("parallel", gpus),
        (
            "weights",
            f"{m.weights_total_gb:.4g} GB total at {m.bytes_per_param:g} B/param "
            f"({plan.quantization if plan.quantization != 'none' else 'unquantized'}) -> "
            f"{m.weights_per_gpu:.2f} GiB {unit}",
        ),
        (
            "kv cache",
            f"{plan.max_model_len} tokens x {plan.concurrent_seqs} seq x "
            f"{m.kv_bytes_per_token:,} B/token -> {m.kv_cache:.2f} GiB {unit}",
        ),
        *_overhead_rows(plan),
        ("needed/budget", f"{m.needed:.2f} / {m.budget:.2f} GiB {unit}"),
        (
            "kv capacity",
            f"{m.kv_capacity_tokens:,} tokens ({seqs:,} sequences of {plan.max_model_len})",
        ),
    ]
    head = f"plan: {plan.model} | strategy {plan.strategy} | tier {plan.tier}"
    return _plan_table(plan, f"{head} | {verdict}", rows, problems)


def _overhead_rows(plan: Plan) -> list[tuple[str, str]]:
    """The overhead as one row on the CPU; on a GPU one row a term (planning/memory_terms.py)."""
    m = plan.memory
    if plan.device != "cuda":
        return [("overhead", f"{m.overhead:.1f} GiB of host memory")]
    hf = plan.engine != "vllm"
    graphs = "captured outside the budget" if not m.graphs_in_budget else "in the budget"
    rows = [
        ("activation", f"{m.activation:.2f} GiB per GPU ({'allowance' if hf else 'peak'})"),
        ("non-torch", f"{m.non_torch:.2f} GiB per GPU ({'CUDA context' if hf else 'NCCL, ...'})"),
    ]
    if not hf:
        rows.append(("cuda graphs", f"{m.cuda_graph:.2f} GiB per GPU ({graphs})"))
        rows.append(("kv pool", f"{m.kv_pool:.2f} GiB per GPU (the budget's rest)"))
    usable = f"{m.usable_gpu_gib:.2f} GiB usable x {plan.strategy_used.gpu_memory_utilization:g}"
    return [*rows, ("gpu memory", usable)]


def _plan_table(plan: Plan, head: str, rows: list[tuple[str, str]], problems: bool) -> str:
    """The plan as its head line, one aligned row a fact, its explanation, then its remarks."""
    width = max(len(k) for k, _ in rows)
    lines = [head, *(f"  {k.ljust(width)}  {v}" for k, v in rows)]
    if plan.explanation:
        lines.append(f"  {plan.explanation}")
    return "\n".join(lines + _plan_remarks(plan, problems))


def _replicas(plan: Plan) -> str:
    where = {
        "inline": "in this process",
        "process": "each in a process of its own",
        "ray": "each in a Ray actor",
    }.get(plan.replica_backend, plan.replica_backend)
    return f"{plan.data_parallel_size} {where} (replica_backend {plan.replica_backend})"


def format_plan_line(plan: Plan) -> str:
    """The plan in one line (engine, parallel sizes, memory needed/budget, verdict), then its
    explanation and notes: what a run shows before it starts. Its problems are not listed here:
    a run raises every one of them in its ``error:`` block (a sweep lists them per job), and a
    problem is said once."""
    if plan.device == "remote":
        return _served_plan(plan, table=False)
    m = plan.memory
    verdict = verdict_of(plan)
    executor = "" if plan.executor_backend == "none" else f", executor {plan.executor_backend}"
    if plan.device == "cuda":
        parallel = (
            f"tp {plan.tensor_parallel_size} x pp {plan.pipeline_parallel_size} x dp "
            f"{plan.data_parallel_size} = {plan.gpus_needed} GPU(s)"
        )
        memory = f"{m.needed:.2f} / {m.budget:.2f} GiB per GPU"
    else:
        parallel = _cpu_parallel(plan)
        memory = f"{m.needed:.2f} / {m.budget:.2f} GiB of host memory"
    line = (
        f"plan: {plan.model} | strategy {plan.strategy} | tier {plan.tier} | "
        f"{plan.engine} on {plan.device}{executor} | {parallel} | {memory} | {verdict}"
    )
    explanation = [f"  {plan.explanation}"] if plan.explanation else []
    return "\n".join([line, *explanation, *_plan_remarks(plan, problems=False)])


def _plan_remarks(plan: Plan, problems: bool = True) -> list[str]:
    lines = [f"  note: {n}" for n in plan.notes]
    if plan.problems and problems:
        lines.append(f"{len(plan.problems)} problem(s):")
        lines += [f"  - {p}" for p in plan.problems]
    return lines


def _cpu_parallel(plan: Plan) -> str:
    """How a CPU deployment is laid out: processes (or replicas), ranks and threads."""
    ranks = plan.tensor_parallel_size * plan.pipeline_parallel_size
    threads = f"{plan.threads_per_rank} thread(s)"
    if plan.data_parallel_size > 1:
        return (
            f"{plan.data_parallel_size} replicas x {ranks} rank(s) on the CPU, {threads} per rank"
        )
    if plan.engine == "vllm":
        tp, pp = plan.tensor_parallel_size, plan.pipeline_parallel_size
        return f"tp {tp} x pp {pp} on the CPU, {threads} per rank"
    return f"one process on the CPU, {threads}"


def _served_plan(plan: Plan, table: bool, problems: bool = False) -> str:
    """An endpoint's plan: no memory fit (nothing loads here), where it is served (a note)."""
    head = f"plan: {plan.model} | strategy {plan.strategy} | tier {plan.tier}"
    weights = f"{plan.memory.weights_total_gb:.4g} GB of weights, served elsewhere"
    rows = [
        ("engine", f"{plan.engine}: a model served over HTTP, nothing loads here"),
        ("at once", f"{plan.datasets_at_once} dataset(s) evaluated at once against the server"),
        ("context", f"{plan.max_model_len} tokens (max_model_len; the server's is probed)"),
        ("weights", weights),
    ]
    if not table:
        line = f"{head} | {plan.engine} | {weights} | {verdict_of(plan)}"
        explanation = [f"  {plan.explanation}"] if plan.explanation else []
        return "\n".join([line, *explanation, *_plan_remarks(plan, problems=False)])
    return _plan_table(plan, f"{head} | {verdict_of(plan)}", rows, problems)
