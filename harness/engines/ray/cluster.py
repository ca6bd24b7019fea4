"""The Ray cluster that data-parallel replicas run on: found, started or joined, then awaited.

Where the cluster comes from, first match wins (:func:`connect`):

1. Ray already initialised in this process (a test's ``ray.cluster_utils.Cluster``, a notebook):
   used as it is and left running.
2. ``ray.address`` in the config (``Plan.ray_address``): join that existing cluster (``host:6379``, ``ray://...``,
   ``auto``); only this process's connection is closed at the end.
3. Inside a SLURM allocation of several nodes: node 0 (the rank that evaluates) starts a Ray head
   on a port derived from the job id; every other node's task joins it
   (:func:`join_slurm_head`, called by the sweep's rank > 0 tasks) and blocks until the head
   goes away. The head is stopped when the engine closes.
4. Otherwise a local Ray on this node, with the CPUs this process may use.

Then :meth:`RayCluster.wait_for` polls Ray until the cluster has what the plan needs (CPUs, GPUs,
nodes), and fails after a timeout with what is missing named. Nothing here is imported by the
planner; ``ray`` is imported only when a cluster is wanted.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.engines.ray.output import init_ray, stop_logging_worker_output
from harness.errors import HarnessError
from harness.machine.slurm import SlurmAllocation, slurm_allocation

if TYPE_CHECKING:
    from harness.planning.plan import Plan

log = logging.getLogger(__name__)

INSTALL_RAY = 'pip install -e ".[ray]"'
"""The command that installs Ray (the ``ray`` extra: ray[default]==2.60.0)."""
WAIT_BASE_S = 120.0
"""Shortest wait for the cluster's resources, before the model's share is added."""
WAIT_S_PER_GB = 2.0
"""Added per GB of weights: bigger models run on bigger allocations, slower to come up."""
JOIN_RETRY_S = 2.0
STARTED_LINE = "Ray runtime started"
"""What ``ray start`` prints once this node has joined (or started) the cluster."""


class ClusterError(HarnessError, RuntimeError):
    """The Ray cluster cannot be reached, or lacks what the plan needs (the CLI prints it as an
    error with its fix, no traceback)."""


def ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None


def _ray_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ray.scripts.scripts", *args]


def use_token_auth(make_token: bool) -> None:
    """Token authentication for every Ray process of the job, decided explicitly.

    Ray 2.60 turns it on for a ``ray start --head`` only where a token already exists, and a
    client whose ``RAY_AUTH_MODE`` is unset then fails with "InvalidAuthToken" (measured). So
    every node of a SLURM job sets ``RAY_AUTH_MODE=token`` (unless the user chose), and node 0
    makes the token where there is none: ``~/.ray/auth_token``, in the home directory the nodes
    share (or ``RAY_AUTH_TOKEN_PATH`` / ``RAY_AUTH_TOKEN``, Ray's own variables, where not)."""
    mode = os.environ.setdefault("RAY_AUTH_MODE", "token")
    if mode.lower() != "token":
        return
    from ray._private.authentication import authentication_token_setup as tokens

    has_token = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
    if make_token and not has_token and not tokens._get_default_token_path().exists():
        tokens.generate_and_save_token()
    from ray._raylet import Config  # type: ignore[attr-defined]

    Config.initialize("")  # this process's Ray sees the mode too (as Ray's own setup does)


def _ray_start_block(*args: str, start_timeout: float) -> tuple[int, bool]:
    """Run ``ray start <args> --block``, echoing its output; (exit code, whether it started).

    A ``ray start --address`` whose head never answers waits for ever (measured), so one that has
    not started within ``start_timeout`` seconds is stopped."""
    proc = subprocess.Popen(
        _ray_cli("start", *args, "--block"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its raylet's agents join this group: swept below
    )
    started = threading.Event()

    def stop_unless_started() -> None:
        if not started.wait(start_timeout) and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

    threading.Thread(target=stop_unless_started, daemon=True).start()
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        if STARTED_LINE in line:
            started.set()
    code = proc.wait()
    joined = started.is_set()
    started.set()  # releases the watchdog
    _sweep_group(proc.pid)
    return code, joined


def _sweep_group(pgid: int, grace: float = 5.0) -> None:
    """End what is left of a ``ray start``'s process group (its raylet's dashboard and runtime
    env agents outlive it: measured)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.2)


def join_slurm_head(alloc: SlurmAllocation | None = None, timeout: float = 600.0) -> int:
    """What a node other than node 0 does in a multi-node job: join the head node 0 starts, as a
    Ray worker node, and block until the head goes away. Returns 0 when it had joined (the head
    stopping is the normal end), else ``ray start``'s exit code once ``timeout`` has passed."""
    alloc = alloc or slurm_allocation()
    if alloc is None:
        raise ClusterError("not inside a SLURM allocation of several nodes: nothing to join")
    address = f"{socket.gethostbyname(alloc.head)}:{alloc.port}"
    use_token_auth(make_token=False)
    deadline = time.monotonic() + timeout
    while True:  # the head may not be up yet: retry until it is, or the timeout
        left = max(1.0, deadline - time.monotonic())
        code, joined = _ray_start_block(f"--address={address}", start_timeout=left)
        if code == 0 or joined:  # it had joined: its end means the head stopped
            return 0
        if time.monotonic() > deadline:
            return code
        log.info("Ray head %s not reachable yet (exit %d): retrying", address, code)
        time.sleep(JOIN_RETRY_S)


# ---------------------------------------------------------------- what the plan needs


@dataclass
class Needs:
    """Resources the replicas of a plan take from the cluster."""

    cpus: float
    gpus: float
    nodes: int = 1
    per_replica: dict[str, float] = field(default_factory=dict)
    """``num_cpus`` / ``num_gpus`` of each replica actor."""


def needs_of(plan: Plan, cpus_here: int) -> Needs:
    """Replicas on GPUs take ``tp x pp`` GPUs (and one CPU) each; on the CPU, an equal share of
    this node's CPUs each (at least one)."""
    dp = plan.data_parallel_size
    if plan.device == "cuda":
        gpus = plan.tensor_parallel_size * plan.pipeline_parallel_size
        return Needs(dp, gpus * dp, plan.nodes_needed, {"num_cpus": 1, "num_gpus": gpus})
    each = max(1, cpus_here // dp)
    return Needs(each * dp, 0, 1, {"num_cpus": each})


def wait_timeout(plan: Plan) -> float:
    """``ray.wait_timeout_s`` when set, else a base plus a share scaled to the model's weights."""
    if plan.ray_wait_timeout_s is not None:
        return float(plan.ray_wait_timeout_s)
    return WAIT_BASE_S + WAIT_S_PER_GB * math.ceil(plan.memory.weights_total_gb)


# ---------------------------------------------------------------- the cluster


class RayCluster:
    """A connection to a Ray cluster, and the processes this run started for it (if any)."""

    def __init__(
        self,
        how: str,
        owned: bool,
        head: subprocess.Popen[bytes] | None = None,
        address: str | None = None,
    ):
        self.address = address
        """The head this run started (``ip:port``), if any."""
        self.how = how
        """Where it came from: ``existing``, ``address <addr>``, ``slurm <ip:port>``, ``local``."""
        self.owned = owned
        """This run connected (so it disconnects at close)."""
        self._head = head

    def alive_nodes(self) -> list[dict[str, Any]]:
        import ray

        return [n for n in ray.nodes() if n.get("Alive")]

    def resources(self) -> tuple[float, float, int]:
        """CPUs, GPUs and nodes the cluster has now (alive nodes only)."""
        nodes = self.alive_nodes()
        cpus = sum(n.get("Resources", {}).get("CPU", 0.0) for n in nodes)
        gpus = sum(n.get("Resources", {}).get("GPU", 0.0) for n in nodes)
        return cpus, gpus, len(nodes)

    def wait_for(self, needs: Needs, timeout: float, poll_s: float = 0.5) -> None:
        """Wait until the cluster has ``needs``; ``ClusterError`` naming what is missing after
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            cpus, gpus, nodes = self.resources()
            missing = []
            if cpus < needs.cpus:
                missing.append(f"{needs.cpus - cpus:g} CPU(s)")
            if gpus < needs.gpus:
                missing.append(f"{needs.gpus - gpus:g} GPU(s)")
            if nodes < needs.nodes:
                missing.append(f"{needs.nodes - nodes} node(s)")
            if not missing:
                return
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"the Ray cluster ({self.how}) has {cpus:g} CPU(s), {gpus:g} GPU(s) on "
                    f"{nodes} node(s) after {timeout:.0f}s; the plan needs {needs.cpus:g} CPU(s), "
                    f"{needs.gpus:g} GPU(s) on {needs.nodes} node(s): missing "
                    f"{', '.join(missing)}. Fix: start the missing nodes (ray start "
                    "--address=<head>), ask SLURM for them, or a smaller "
                    "strategy.data_parallel_size; ray.wait_timeout_s waits longer."
                )
            time.sleep(poll_s)

    def close(self) -> None:
        """Disconnect (when this run connected) and stop the head this run started."""
        if self.owned:
            import ray

            with contextlib.suppress(Exception):
                ray.shutdown()
            stop_logging_worker_output()
            self.owned = False
        if self._head is not None and self._head.poll() is None:
            # `ray start --block` stops every process it started when it is terminated
            self._head.send_signal(signal.SIGTERM)
            try:
                self._head.wait(30)
            except subprocess.TimeoutExpired:
                self._head.kill()
                self._head.wait(5)
            _forget_address(self.address)
        self._head = None


def _forget_address(address: str | None) -> None:
    """Remove the address file ``ray start --head`` leaves (``ray stop`` would): else a later
    ``ray.init()`` on this machine tries to join the stopped head."""
    path = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    with contextlib.suppress(OSError):
        if address and path.read_text().strip() == address:
            path.unlink()


def _init(**kwargs: Any) -> None:
    init_ray(**kwargs)  # Ray's output and the replicas' into the run's log


def _node_ip() -> str:
    """This node's address as Ray chooses it (the interface that routes outwards)."""
    from ray.util import get_node_ip_address

    return str(get_node_ip_address())


def _start_slurm_head(alloc: SlurmAllocation, cpus: int) -> subprocess.Popen[bytes]:
    ip = _node_ip()
    args = ["start", "--head", f"--port={alloc.port}", f"--node-ip-address={ip}"]
    args += [f"--num-cpus={cpus}", "--include-dashboard=false", "--block"]
    gpus = os.environ.get("SLURM_GPUS_ON_NODE")
    if gpus and gpus.isdigit():
        args.append(f"--num-gpus={gpus}")
    return subprocess.Popen(_ray_cli(*args))


def connect(address: str | None, cpus_here: int) -> RayCluster:
    """Find, join or start the cluster (module docstring: the order); ``address`` is the plan's
    ``ray_address``."""
    import ray

    if ray.is_initialized():
        return RayCluster("existing", owned=False)
    if address:
        _init(address=address)
        return RayCluster(f"address {address}", owned=True)
    alloc = slurm_allocation()
    if alloc is not None and alloc.node_rank == 0:
        use_token_auth(make_token=True)
        head = _start_slurm_head(alloc, cpus_here)
        address = f"{_node_ip()}:{alloc.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                _init(address=address)
                break
            except (ConnectionError, RuntimeError) as err:
                if head.poll() is not None or time.monotonic() > deadline:
                    RayCluster("slurm", owned=False, head=head).close()
                    raise ClusterError(
                        f"the Ray head of SLURM job {alloc.job_id} ({address}) did not come up: "
                        f"{err}"
                    ) from err
                time.sleep(1)
        return RayCluster(f"slurm {address}", owned=True, head=head, address=address)
    # "local": a new cluster even where a `ray start` on this machine left its address behind
    _init(address="local", num_cpus=cpus_here)
    return RayCluster("local", owned=True)


def ray_dp_problems(plan: Plan) -> list[str]:
    """What stops ``data_parallel_size`` replicas here, each with the limit and the fix:
    Ray missing, or more replicas than this node's CPUs (when the cluster is this node).

    Here, not in ``replicas``, so that validation imports neither Ray nor lm-eval."""
    dp = plan.data_parallel_size
    who = f"strategy '{plan.strategy}': data_parallel_size={dp}"
    if not ray_installed():
        without = "strategy.data_parallel_size=1" if dp > 1 else "strategy.replica_backend=auto"
        return [
            f"{who} runs {dp} replica(s) as Ray actors, but Ray is not installed in this "
            f"environment. Fix: {INSTALL_RAY}; or {without} (no Ray)."
        ]
    if plan.device == "cuda" or plan.ray_address or slurm_allocation() is not None:
        return []  # GPUs: the tier rules count them; another cluster: awaited at build
    cpus = len(os.sched_getaffinity(0))
    ranks = plan.tensor_parallel_size * plan.pipeline_parallel_size
    if dp * ranks > cpus:
        return [
            f"{who}: {dp} replica(s) x {ranks} CPU rank(s) need {dp * ranks} CPU(s), but this "
            f"process may use {cpus}. Fix: strategy.data_parallel_size <= {max(1, cpus // ranks)}"
            ", or ray.address=<head:port> to run them on a Ray cluster with more CPUs."
        ]
    return []
