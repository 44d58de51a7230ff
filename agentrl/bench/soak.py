"""`agentrl bench soak --minutes M`: a training run under faults, checked for lost work.

The run (`configs/soak.yaml`: 20% of tool calls fail) has an environment actor killed every M/6 minutes
and a generator engine every M/3 minutes (5 and 10 minutes in the 30-minute form; `--env-kill-every-s`,
`--generator-kill-every-s` for short forms, whose driver start-ups leave little time), Ray restarting both;
at 40% of the time its driver and every process it started are SIGKILLed (a preempted node), and the run
is started again with `trainer.resume=auto`; at the end (on a busy machine, once every kind of fault has
been injected, up to twice the time) it gets SIGTERM and must exit 0 with a checkpoint and no process left.
Reported: steps done, faults injected, restarts, resumes, the ledger (summary.json) and lost groups:
admitted minus trained, dropped as stale, failed and in flight at stop (must be 0). Writes
`bench/soak.json`; the table is in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

from agentrl.bench.processes import kill_tagged, new_tag, tagged_env, tagged_processes
from agentrl.errors import UserError
from agentrl.training.accounting import GROUP_ENDS, lost_groups

KILL_AT = 0.4  # the driver kill, as a share of the soak's time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare this command's arguments."""
    parser.add_argument("--minutes", type=float, default=30.0, help="wall-clock length of the soak")
    parser.add_argument("--config", default="configs/soak.yaml")
    parser.add_argument("--output-dir", default="runs/bench", help="trainer.output_dir of the run")
    parser.add_argument("--out", default="bench/soak.json")
    parser.add_argument("--env-kill-every-s", type=float, default=0.0, help="default: the soak's time / 6")
    parser.add_argument("--generator-kill-every-s", type=float, default=0.0, help="default: the soak's time / 3")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides for the run")


def start_driver(args: argparse.Namespace, extra: list[str], log: str, tag: str) -> subprocess.Popen:
    """`agentrl train` in a session of its own, everything it starts tagged with `tag` (so the whole node
    can be killed at once, and nothing else on the machine with it)."""
    cmd = [sys.executable, "-m", "agentrl.cli", "train", args.config, f"trainer.output_dir={args.output_dir}",
           *args.overrides, *extra]
    with open(log, "w") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                env=tagged_env(tag, {**os.environ, "RAY_ADDRESS": ""}))


def has_checkpoint(run_dir: str) -> bool:
    root = os.path.join(run_dir, "checkpoints")
    return os.path.isdir(root) and any(re.match(r"^step_\d+$", n) for n in os.listdir(root))


def preempt(driver: subprocess.Popen, tag: str) -> None:
    """SIGKILL the driver's whole session, then whatever Ray process it left (a node lost at once)."""
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    time.sleep(2)
    kill_tagged(tag)


def stop_gracefully(driver: subprocess.Popen, timeout_s: float) -> int:
    """SIGTERM, then wait for the driver's own clean exit (its return code; -9 if it had to be killed)."""
    driver.send_signal(signal.SIGTERM)
    try:
        return driver.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        return -9


def wait_until(deadline: float, driver: subprocess.Popen, ready: Any = lambda: True,
               cap: float = math.inf) -> None:
    """Until `deadline` and `ready()` (but no later than `cap`); the driver exiting first is an error."""
    while (time.monotonic() < deadline or not ready()) and time.monotonic() < cap and driver.poll() is None:
        time.sleep(1.0)
    if driver.poll() is not None:
        raise UserError(f"bench soak: the run exited early ({driver.returncode}); see its log")


def count(pattern: str, *logs: str) -> int:
    return sum(len(re.findall(pattern, open(log).read())) for log in logs)


def run(args: argparse.Namespace) -> int:
    """Run the soak and write its report."""
    from agentrl.config import load_config

    cfg = load_config(args.config, [f"trainer.output_dir={args.output_dir}", *args.overrides])
    run_dir = os.path.join(args.output_dir, cfg.trainer.run_name)
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    total_s = args.minutes * 60
    every = {"env": args.env_kill_every_s or total_s / 6, "generator": args.generator_kill_every_s or total_s / 3,
             "reward": cfg.faults.kill_reward_every_s}
    kills = [f"faults.kill_env_every_s={every['env']:.1f}", f"faults.kill_generator_every_s={every['generator']:.1f}"]
    logs = [os.path.join(run_dir, "driver-1.log"), os.path.join(run_dir, "driver-2.log")]
    tag = new_tag()
    t0 = time.monotonic()
    first = start_driver(args, kills, logs[0], tag)
    wait_until(t0 + KILL_AT * total_s, first, lambda: has_checkpoint(run_dir))
    preempt(first, tag)
    print(f"[agentrl] soak: driver killed at {time.monotonic() - t0:.0f}s; resuming")
    second = start_driver(args, [*kills, "trainer.resume=auto"], logs[1], tag)
    # On a busy machine start-ups eat the time: the soak runs on (up to twice its length) until every kind of
    # fault it was asked for has been injected at least once.
    def injected() -> bool:
        return all(count(rf"fault: killed {kind}-", *logs) > 0 for kind, s in every.items() if s > 0)

    wait_until(t0 + total_s, second, injected, cap=t0 + 2 * total_s)
    rc = stop_gracefully(second, cfg.trainer.stop_timeout_s + 300)
    time.sleep(3)
    left = sorted(tagged_processes(tag))
    report = soak_report(run_dir, logs, rc, left, time.monotonic() - t0, args.minutes)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"[agentrl] soak: {report['steps']} steps in {report['wall_s']:.0f}s; faults {report['faults']}; "
          f"restarts {report['restarts']}; resumes {report['resumes']}; lost groups {report['lost_groups']}; "
          f"exit {rc}; processes left {len(left)}")
    print(f"[agentrl] report: {args.out}")
    return 0 if report["lost_groups"] == 0 and rc == 0 and not left else 1


def soak_report(run_dir: str, logs: list[str], rc: int, left: list[int], wall_s: float,
                minutes: float) -> dict[str, Any]:
    """The soak's numbers from the run's files: its summary.json, metrics.jsonl and the two driver logs."""
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    with open(os.path.join(run_dir, "admissions.jsonl")) as f:
        admitted_ids = {json.loads(line)["group_id"] for line in f if line.strip()}
    kills = {kind: count(rf"fault: killed {kind}-", *logs) for kind in ("env", "reward", "generator")}
    return {
        "minutes": minutes, "wall_s": wall_s, "steps": summary["steps"], "exit_code": rc,
        "faults": {**kills, "driver": 1, "tool_errors_in_trained_trajectories": sum(r["tool_errors"] for r in rows),
                   "tool_calls_in_trained_trajectories": sum(r["tool_calls"] for r in rows)},
        "restarts": {"generator_weights_pushed": count(r"generator-\d+ restarted", *logs),
                     "groups_retried": summary["groups_retried"]},
        "resumes": count(r"resuming from ", *logs),
        "ledger": {k: summary[k] for k in ("groups_admitted", *GROUP_ENDS, "groups_retried", "failed_reasons")},
        "lost_groups": lost_groups(summary),
        "admissions_distinct": len(admitted_ids), "stopped_by": summary["stopped_by"],
        "processes_left": left,
    }
