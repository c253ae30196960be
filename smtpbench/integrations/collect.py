"""The master's side of a distributed run: numbered deltas from workers in, one exact result out.

Each worker process swaps its :class:`~smtpbench.load.recorder.Recorder` for a
fresh one whenever it reports, and sends what the old one held (an export)
with a sequence number 1, 2, 3, … The last one is marked final and says how
many there were. Exports add losslessly (:func:`merge_exports`: histograms
and counters add), so the master merges every numbered delta exactly once,
in whatever order they arrive, and knows for each worker whether it has them
all. A worker whose deltas are missing makes the result invalid, with the
reason, instead of quietly short; one the master gave up on (:meth:`Collector.lose`:
Locust lost it) says so.

Nothing here imports Locust or gevent: this module is plain data in, plain
data out, and is tested on its own.
"""

from __future__ import annotations

import socket

from ..load.recorder import cpu_series, merge_exports
from ..results import build_result, verdict
from ..scenario import Scenario

#: Locust's own per-worker CPU warning fires above this share of a core (locust.runners).
LOCUST_CPU_WARNING = 90


class Collector:
    """The deltas of one run, from every worker that took part."""

    def __init__(self, scenario: Scenario, run_id: str, target: str, started_at: float, command: str,
                 slices: dict[str, int]):
        self.scenario = scenario
        self.run_id = run_id
        self.target = target
        self.started_at = started_at
        self.command = command
        self.slices = dict(slices)               # client id -> slice index (the workers taking part)
        self.deltas: dict[str, dict[int, dict]] = {cid: {} for cid in slices}
        self.final_seq: dict[str, int] = {}      # client id -> number of deltas it sent in all
        self.info: dict[str, dict] = {cid: {} for cid in slices}
        self.failures: dict[str, str] = {}      # client id -> why it could not take part
        self.lost: dict[str, str] = {}          # client id -> why its final report is not waited for
        self.duplicates = 0
        self.strays = 0                          # deltas of another run or from a worker not taking part

    # -- in ---------------------------------------------------------------------

    def add(self, client_id: str, part: dict) -> bool:
        """Take one delta ``{run_id, seq, export, final?, info?}`` (or a final ``{run_id, seq: 0, final, error}``
        from a worker that could not start); False when it is not for this run or was seen before."""
        if part.get("run_id") != self.run_id or client_id not in self.slices:
            self.strays += 1
            return False
        if part.get("info"):
            self._note(client_id, part["info"])
        if part.get("final"):
            self.final_seq[client_id] = part["seq"]
        if part.get("error"):
            self.failures[client_id] = part["error"]
        if "export" not in part:
            return True
        got = self.deltas[client_id]
        if part["seq"] in got:
            self.duplicates += 1
            return False
        got[part["seq"]] = part["export"]
        return True

    def _note(self, client_id: str, info: dict) -> None:
        mine = self.info[client_id]
        for key, value in info.items():
            if key in ("locust_cpu_max", "cpu_max"):
                mine[key] = max(mine.get(key, 0.0), value)
            else:
                mine[key] = value

    # -- state ------------------------------------------------------------------

    def missing(self) -> dict[str, str]:
        """Workers whose deltas are not all in, with what is missing."""
        out = {}
        for cid in self.slices:
            last = self.final_seq.get(cid)
            got = self.deltas[cid]
            if last is None:
                out[cid] = "no final report"
            else:
                lost = [s for s in range(1, last + 1) if s not in got]
                if lost:
                    out[cid] = f"{len(lost)} of {last} reports lost"
        return out

    def complete(self) -> bool:
        return not self.missing()

    def lose(self, client_id: str, why: str) -> None:
        """The master stops waiting for this worker's reports (Locust lost it: ``why``); the result says so."""
        self.lost.setdefault(client_id, why)

    def awaited(self) -> list[str]:
        """Workers whose reports are not all in and that are still waited for (not :meth:`lose`-t)."""
        return [cid for cid in self.missing() if cid not in self.lost]

    # -- out --------------------------------------------------------------------

    def result(self, loop: str = "gevent", extra_reasons: list[str] | None = None,
               interrupted: dict | None = None) -> dict:
        """The result document (schema of :mod:`smtpbench.results`, kind ``locust``) from what arrived;
        ``interrupted`` = ``{signal, at_s}`` when a signal ended the run early (as ``smtpbench run`` says it)."""
        order = sorted(self.slices, key=lambda c: self.slices[c])
        per_worker = {cid: merge_exports(list(self.deltas[cid].values())) for cid in order}
        merged = merge_exports([ex for cid in order for ex in self.deltas[cid].values()])
        merged["processes"] = [{"cpu": cpu_series(per_worker[cid]["interval_data"]), "totals": per_worker[cid]["totals"]}
                               for cid in order]
        if interrupted is not None:   # the run's planned length was not reached: rates up to the stop
            merged["totals"]["interrupted_us"] = int(interrupted["at_s"] * 1e6)
        result = build_result(self.scenario, merged, run_id=self.run_id, kind="locust", command=self.command,
                              target=self.target, started_at=self.started_at, processes=len(order), loop=loop)
        workers = []
        warnings = []
        for i, cid in enumerate(order):
            totals = per_worker[cid]["totals"]
            info = self.info[cid]
            cpu = [share for _, share in merged["processes"][i]["cpu"]]
            row = {
                "slice": self.slices[cid], "client_id": cid, "worker_index": info.get("worker_index"),
                "hostname": info.get("hostname"), "ok": totals.get("ok", 0), "failed": totals.get("failed", 0),
                "warmup_ok": totals.get("warmup_ok", 0), "issued": totals.get("issued", 0),
                "cpu_median": result["health"]["cpu_by_process"][i], "cpu_max": round(max(cpu), 3) if cpu else 0.0,
                "locust_cpu_max": info.get("locust_cpu_max"), "locust_cpu_warnings": info.get("cpu_warnings", 0),
                "reports": len(self.deltas[cid]), "lost": self.lost.get(cid),
            }
            workers.append(row)
            if row["locust_cpu_warnings"] or (row["locust_cpu_max"] or 0) > LOCUST_CPU_WARNING:
                warnings.append(f"Locust worker {row['slice']} ({row['hostname'] or cid}) reported CPU usage up to "
                                f"{row['locust_cpu_max'] or 0:.0f}% (warning threshold {LOCUST_CPU_WARNING}%): "
                                f"its timings may be inflated; add workers or lower the load")
        health = result["health"]
        health["workers"] = workers
        health["warnings"] = warnings
        reasons = [f"worker {self.slices[cid]} ({cid}): "
                   + (f"lost ({self.lost[cid]}): {what}" if cid in self.lost else what)
                   + "; its figures are incomplete" for cid, what in self.missing().items()]
        reasons += [f"worker {self.slices[cid]} ({cid}) could not take part: {why}"
                    for cid, why in self.failures.items()]
        reasons += extra_reasons or []
        if reasons:
            health["reasons"].extend(reasons)
            health["valid"] = False
            result["verdict"] = verdict(result)
        if interrupted is not None:
            result["interrupted"] = interrupted
        result["locust"] = {"workers": len(order), "master": socket.gethostname(),
                            "reports": sum(len(d) for d in self.deltas.values()),
                            "duplicates_ignored": self.duplicates, "strays_ignored": self.strays}
        return result
