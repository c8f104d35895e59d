"""The worker process of one side, and the parent's handle on it.

Each model runs in its own process (``python -m rwdet.analysis.benchmark --worker JSON``), built
once; the parent sends one JSON command per line on the worker's stdin and reads one JSON reply
per line from its stdout (:func:`worker_main` gives the protocol).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from dataclasses import asdict
from typing import Any, Dict

import torch

from .measure import ModelBench
from .specs import PHASES, REPO_ROOT, BenchmarkSetup, PairSpec, SideSpec


def worker_main(payload: str) -> int:
    """Worker entry (``python -m rwdet.analysis.benchmark --worker JSON``).

    ``JSON`` holds ``side``, ``pair`` and ``setup``. The worker answers on its stdout, one JSON
    line per message: first ``{"ok": true, "ready": {...}}`` once the model is built, then one
    reply per command read from stdin: ``{"cmd": "round", "phase": "train"|"infer"}``,
    ``{"cmd": "profile", "phase": ...}``, ``{"cmd": "onednn", "phase": ...}``, ``{"cmd": "stats"}``,
    ``{"cmd": "runtime"}`` (:meth:`ModelBench.runtime`: deploys, then the runtime's name,
    reorders and parity) or ``{"cmd": "quit"}``. A failure answers ``{"ok": false, "error": ...}`` (traceback on
    stderr) and ends the worker with exit status 1.
    """
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints go to stderr, never into the protocol
    try:
        spec = json.loads(payload)
        side = SideSpec(**{**spec["side"], "opts": tuple(spec["side"]["opts"])})
        p = spec["pair"]
        pair = PairSpec(p["name"], p["title"], p["kind"], p["batch"], tuple(p["size"]),
                        tuple(SideSpec(**{**d, "opts": tuple(d["opts"])}) for d in p["sides"]))
        s = spec["setup"]
        tuples = ("batches", "det_size", "rw_opts", "r50_opts", "phases")
        setup = BenchmarkSetup(**{**s, **{k: tuple(s[k]) for k in tuples}})
        bench = ModelBench(side, pair, setup)
        device_name = (torch.cuda.get_device_name(torch.device(setup.device)) if setup.device.startswith("cuda")
                       else f"CPU, {os.cpu_count()} logical cores")
        channel.write(json.dumps({"ok": True, "ready": {
            "label": bench.label, "threads": torch.get_num_threads(), "device_name": device_name,
            "base_rss_mib": bench.base_rss_mib, "pid": os.getpid()}}) + "\n")
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd["cmd"] == "quit":
                return 0
            if cmd["cmd"] == "stats":
                result = bench.stats()
            elif cmd["cmd"] == "runtime":
                result = bench.runtime()
            elif cmd["cmd"] == "round" and cmd.get("phase") in PHASES:
                result = bench.train_round() if cmd["phase"] == "train" else bench.infer_round()
            elif cmd["cmd"] == "profile" and cmd.get("phase") in PHASES:
                result = bench.profile(cmd["phase"])
            elif cmd["cmd"] == "onednn" and cmd.get("phase") in PHASES:
                result = bench.onednn(cmd["phase"])
            else:
                raise ValueError(f"unknown command {cmd!r}; allowed: round, profile or onednn "
                                 "train/infer, stats, runtime, quit")
            channel.write(json.dumps({"ok": True, "result": result}) + "\n")
        return 0
    except Exception as exc:  # reported to the parent, which records the pair as failed
        traceback.print_exc()
        channel.write(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}) + "\n")
        return 1


class WorkerClient:
    """The parent's handle on one worker process; its stderr goes to a file in ``log_dir``."""

    def __init__(self, side: SideSpec, pair: PairSpec, setup: BenchmarkSetup, log_dir: str, name: str):
        payload = json.dumps({"side": asdict(side), "pair": asdict(pair), "setup": asdict(setup)})
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([REPO_ROOT, *filter(None, [env.get("PYTHONPATH")])])
        self.log_path = os.path.join(log_dir, f"{name}.log")
        self.name = name
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rwdet.analysis.benchmark", "--worker", payload],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=REPO_ROOT,
            )

    def send(self, cmd: Dict[str, Any]) -> None:
        """Send one command line."""
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> Dict[str, Any]:
        """Read one reply; raises RuntimeError (with the tail of the worker's log) on a failure."""
        line = self.proc.stdout.readline()
        reply = json.loads(line) if line.strip() else {"ok": False, "error": f"exit {self.proc.wait()}"}
        if not reply.get("ok"):
            with open(self.log_path) as f:
                tail = "\n".join(f.read().strip().splitlines()[-15:])
            raise RuntimeError(f"worker {self.name} failed: {reply.get('error')}\n{tail}")
        return reply.get("result", reply.get("ready"))

    def request(self, cmd: Dict[str, Any]) -> Dict[str, Any]:
        """Send a command and return its result."""
        self.send(cmd)
        return self.receive()

    def close(self) -> None:
        """Ask the worker to quit; kill it if it has not within 60 s."""
        if self.proc.poll() is None:
            try:
                self.send({"cmd": "quit"})
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            stream.close()
