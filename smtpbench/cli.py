"""The command line: the only module that reads argv, picks the event loop, and prints.

Exit codes (documented in the README):
  0  success
  1  a threshold failed
  2  usage or configuration error (bad flag, bad scenario)
  3  the run is invalid (the generator, not the server, was the bottleneck; or messages were lost)
"""

from __future__ import annotations

import argparse
import os
import sys

from . import eventloop
from .addresses import parse_address
from .cliargs import build_parser
from .protocol.extensions import EXTENSIONS
from .scenario import ScenarioError, check_listen, load, override, resolve_workers

EXIT_OK, EXIT_THRESHOLDS, EXIT_USAGE, EXIT_INVALID = 0, 1, 2, 3


def _load_overrides(args: argparse.Namespace, scenario) -> dict:
    flags = {
        "load__sessions": args.sessions, "load__rate": args.rate, "load__arrival": args.arrival,
        "load__duration": args.duration, "load__messages": args.messages, "load__warmup": args.warmup,
        "message__size": args.size, "message__recipients": args.recipients,
        "load__messages_per_connection": args.messages_per_connection,
        "load__max_connections": args.max_connections, "load__processes": args.processes,
        "load__pipelining": args.pipelining,
        "load__pipeline_messages": args.pipeline_messages,
        "target__lmtp": args.lmtp, "sink__lmtp": args.lmtp,
    }
    if args.rate is not None and args.sessions is not None:
        raise ScenarioError("--rate (an open loop at R msgs/s) and --sessions (a closed loop of N sessions) "
                            "exclude each other: give one")
    if args.rate is not None:
        # The flag picks the open loop at one rate: the scenario's stages and think time are not used.
        flags.update(load__model="open", load__stages=[], load__think_time=0.0)
    elif args.sessions is not None:
        flags.update(load__model="closed", load__stages=[])  # and _load_clears unsets the open loop's rate
    closed = flags.get("load__model", scenario.load.model) == "closed"
    for flag, given in (("--arrival", args.arrival), ("--max-connections", args.max_connections)):
        if closed and given is not None:
            raise ScenarioError(f"{flag} is for the open loop (--rate, or model = \"open\"); "
                                "this run is a closed loop")
    return flags


def _load_clears(args: argparse.Namespace) -> tuple[str, ...]:
    clear = ()
    if args.sessions is not None:
        clear += ("load__rate",)
    # --messages alone means "stop after N messages", not "or after the scenario's duration".
    if args.messages is not None and args.duration is None:
        clear += ("load__duration",)
    return clear


def _address(text: str, source: str, key: str | None, flag: str, default_port: int = 2525):
    """Parse an address from ``key`` of the scenario (None: a flag alone) or its ``flag``;
    ScenarioError naming them."""
    try:
        return parse_address(text, default_port)
    except ValueError as e:
        raise ScenarioError(f"{source}: key '{key}' ({flag}): {e}" if key else f"{flag}: {e}") from None


def _target(args: argparse.Namespace, scenario, source: str):
    address = _address(args.target or f"{scenario.target.host}:{scenario.target.port}", source, "target", "--target")
    if not address.path and address.port == 0:  # as [target] port: no server listens on port 0
        raise ScenarioError(f"--target: port 0 is no server's; expected HOST:PORT with PORT 1-65535, got {args.target!r}")
    return address


def _auth_users(values: list[str] | None) -> dict[str, str] | None:
    """``--auth-user USER:PASSWORD`` (repeatable). One without the colon must not be dropped: with
    no users left, --auth-required would let any credentials pass."""
    if not values:
        return None
    users = {}
    for text in values:
        user, colon, password = text.partition(":")
        if not colon or not user:
            raise ScenarioError(f"--auth-user needs USER:PASSWORD, got {text!r}")
        users[user] = password
    return users


def cmd_sink(args: argparse.Namespace) -> int:
    from .sink.run import run_sink
    from .sink.server import StartError

    source = args.scenario or "<defaults>"
    scenario = load(args.scenario)
    sink = scenario.sink
    advertise = args.advertise if args.advertise is not None else list(sink.advertise)
    unknown = [ext for ext in args.hide if ext not in EXTENSIONS]  # a typo would hide nothing, silently
    if unknown:
        raise ScenarioError(f"{source}: key 'sink.advertise' (--hide): unknown extension {unknown[0]!r}; "
                            f"expected one of {', '.join(EXTENSIONS)}")
    advertise = [ext for ext in advertise if ext not in set(args.hide)]
    flags = {
        "sink__workers": args.workers, "sink__capture": args.capture,
        "sink__max_connections": args.max_connections, "sink__idle_timeout": args.idle_timeout,
        "sink__max_message_size": args.max_message_size, "sink__max_recipients": args.max_recipients,
        "sink__advertise": advertise, "sink__hostname": args.hostname, "sink__lmtp": args.lmtp,
        "sink__check_line_length": args.check_line_length, "sink__grace": args.grace,
        "sink__stats_interval": args.stats_interval, "sink__stats_file": args.stats_file,
        "sink__stats_listen": args.stats_listen, "sink__listen": args.listen,
        "sink__tls_cert": args.tls_cert, "sink__tls_key": args.tls_key, "sink__implicit_tls": args.implicit_tls,
        "sink__auth_required": args.auth_required,
        "sink__auth_users": _auth_users(args.auth_user),
    }
    scenario = override(scenario, f"{source} (with command-line flags)", **flags)
    sink = scenario.sink
    address = _address(sink.listen or f"{scenario.target.host}:{scenario.target.port}", source, "sink.listen", "--listen")
    workers = resolve_workers(sink.workers)
    _one_worker_on_unix(source, address.path, workers)
    try:
        run_sink(sink, address, workers, seed=scenario.seed)
    except StartError as e:
        print(f"smtpbench sink: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # what is not named above: no traceback, but no guess at the cause either
        print(f"smtpbench sink: cannot start: {e.strerror or e}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def install_stop() -> None:
    """From here on, SIGINT, SIGTERM and SIGHUP stop the load and keep its result (see
    load.stopping), until :func:`release_stop`."""
    from .load.stopping import install

    install()


def release_stop() -> None:
    """The result is saved: a signal now leaves at once (a report being drawn, say)."""
    from .load.stopping import release

    release()


def _stopped_code(result: dict, code: int) -> int:
    from .load.stopping import exit_code

    return exit_code(result, code)


def output_folder(given: str | None, default: str) -> str:
    """Create the output folder (``given`` by --out, else ``default``) before any work, or raise
    ScenarioError naming it and why: found after a run, a bad --out would cost its results."""
    from .load.stopping import STOP
    from .results import folder_error, prepare_folder

    folder = given or default
    existed = os.path.isdir(folder)
    try:
        prepare_folder(folder)
    except OSError as e:
        raise ScenarioError(f"{'--out' if given else 'output folder'}: {folder_error(folder, e)}") from None
    if not existed:
        STOP.made(folder)
    return folder


def _new_run_id(name: str) -> str:
    import datetime
    import secrets

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{name}-{stamp}-{secrets.token_hex(2)}"


def _exit_code(result: dict) -> int:
    return {"ok": EXIT_OK, "thresholds_failed": EXIT_THRESHOLDS, "delivery_failed": EXIT_THRESHOLDS,
            "invalid": EXIT_INVALID}[result["verdict"]]


def execute_load(scenario, target, kind: str, run_id: str) -> dict:
    """Run the load phase and build the result (not yet saved); shared by `run` and `bench`."""
    import time

    from .console import Progress
    from .load.plan import connections
    from .load.procs import StartTimeout, run_load
    from .load.stopping import STOP
    from .results import build_result

    processes = resolve_workers(scenario.load.processes)
    # Processes share whole sessions (closed loop): one without a session would wait forever for its
    # share of a --messages run. In an open loop each process holds at least one connection, so more
    # processes than max_connections would open more connections than the cap.
    processes = max(1, min(processes, connections(scenario)))
    progress = Progress(scenario.load.duration)
    started = time.time()
    try:
        merged = run_load(scenario, target, run_id, processes, progress.update)
    except StartTimeout as e:
        raise ScenarioError(f"{e} ({processes} processes on {resolve_workers('auto')} CPUs); key 'load.processes' "
                            "(--processes): give fewer, a positive integer or 'auto' (= the CPUs)") from None
    finally:
        progress.close()
    result = build_result(scenario, merged, run_id=run_id, kind=kind, command=" ".join(["smtpbench", *sys.argv[1:]]),
                          target=str(target), started_at=started, processes=processes, loop=eventloop.current())
    if "interrupted_us" in result["totals"]:
        result["interrupted"] = {"signal": STOP.name, "at_s": round(result["totals"]["interrupted_us"] / 1e6, 3)}
    return result


def _scenario_with_flags(args: argparse.Namespace):
    source = args.scenario or "<defaults>"
    scenario = load(args.scenario)
    scenario = override(scenario, f"{source} (with command-line flags)", clear=_load_clears(args),
                        **_load_overrides(args, scenario))
    return scenario, source


def _one_run(scenario, args, kind: str, folder: str, run_id: str, target=None) -> tuple[dict, str]:
    """One measured run: with the embedded sink unless a target is given; saved in ``folder``."""
    from .bench import EmbeddedSink, crosscheck
    from .results import save

    sink = final = None
    if scenario.relay.enabled:
        if target is None:
            raise ScenarioError("relay mode measures a server under test: give --target HOST:PORT "
                                "(the server that relays to the sink at [relay] listen)")
        from .bench import relay_run

        result = relay_run(scenario, folder, run_id, target, getattr(args, "relay_listen", None),
                           lambda sc, t: execute_load(sc, t, kind, run_id))
    else:
        if target is None:
            sink = EmbeddedSink(scenario, folder, args.listen or "127.0.0.1:0", "--listen" if args.listen else None)
            target = sink.start()
        try:
            result = execute_load(scenario, target, kind, run_id)
        finally:
            final = sink.stop() if sink else None
    if final is not None:
        crosscheck(result, final)
    path = save(result, folder)
    if not getattr(args, "no_report", False):  # (a sweep's steps have none: its report comes after them all)
        release_stop()
        report = _write_report(path, os.path.join("reports", run_id))
        if report:
            result["report"] = report
    return result, path


def _write_report(result_path: str, out_dir: str) -> str | None:
    try:
        from .report import write_report
    except ImportError:
        return None
    try:
        return write_report(result_path, out_dir)
    except OSError as e:  # the result is saved; say why its report is not, and keep the run's verdict
        from .results import folder_error

        print(f"smtpbench: no report: {folder_error(out_dir, e)}", file=sys.stderr)
        return None


def cmd_run(args: argparse.Namespace) -> int:
    from .console import summary_text
    from .results import save

    scenario, source = _scenario_with_flags(args)
    target = _target(args, scenario, source)
    if scenario.sweep is not None:
        return _sweep(scenario, args, "run", target)
    run_id = _new_run_id(scenario.name)
    folder = output_folder(args.out, f"results/{run_id}")
    install_stop()
    result = execute_load(scenario, target, "run", run_id)
    path = save(result, folder)
    release_stop()
    print(summary_text(result, path))
    return _stopped_code(result, _exit_code(result))


def cmd_bench(args: argparse.Namespace) -> int:
    from .console import relay_text, summary_text

    if args.scenario_file and args.scenario:
        raise ScenarioError("give the scenario once: as SCENARIO or as --scenario")
    args.scenario = args.scenario_file or args.scenario
    scenario, source = _scenario_with_flags(args)
    if args.relay or args.drain or args.relay_listen:
        scenario = override(scenario, f"{source} (with command-line flags)", relay__enabled=True if args.relay else None,
                            relay__drain=args.drain, relay__listen=args.relay_listen,
                            flags={"relay.listen": "--relay-listen"})
    if not scenario.relay.enabled and (args.drain or args.relay_listen):
        # Without relay mode nothing reads them: say so rather than run a different benchmark.
        given = [f for f, v in (("--relay-listen", args.relay_listen), ("--drain", args.drain)) if v]
        raise ScenarioError(f"{' and '.join(given)} need{'' if len(given) > 1 else 's'} --relay "
                            f"(or [relay] enabled = true in the scenario)")
    target = _target(args, scenario, source) if args.target else None
    _check_bench_sink(args)
    if scenario.sweep is not None:
        return _sweep(scenario, args, "bench", target)
    run_id = _new_run_id(scenario.name)
    folder = output_folder(args.out, f"results/{run_id}")
    install_stop()
    result, path = _one_run(scenario, args, "bench", folder, run_id, target)
    release_stop()
    print(summary_text(result, path))
    if result.get("crosscheck"):
        c = result["crosscheck"]
        state = "ok" if c["passed"] else "MISMATCH"
        print(f"  cross-check: client saw {c['client_ok']:,} accepted, sink counted {c['sink_messages']:,} [{state}]")
    if result.get("relay"):
        print(relay_text(result["relay"]))
    if result.get("report"):
        print(f"  report: {result['report']}")
    return _stopped_code(result, _exit_code(result))


def _check_bench_sink(args: argparse.Namespace) -> None:
    """bench's --listen (not a scenario key: the embedded sink gets it apart), checked as ``[sink]
    listen`` is before anything starts: a bad one would fail in the sink's process, found only
    once bench waits for it. (``[relay] listen`` and --relay-listen are checked with the scenario.)"""
    if args.listen:
        try:
            check_listen(args.listen)
        except ValueError as e:
            raise ScenarioError(f"--listen: {e}") from None


def _sweep(scenario, args, kind: str, target) -> int:
    """Run every step of ``[sweep]``; write sweep.json and its report; exit by the worst step."""
    from .console import summary_text
    from .scenario import step
    from .sweep import save as save_sweep
    from .sweep import summarise

    sweep_id = _new_run_id(scenario.name + "-sweep")
    root = output_folder(args.out, f"results/{sweep_id}")
    no_report = getattr(args, "no_report", False)
    args = argparse.Namespace(**{**vars(args), "no_report": True})  # step reports: built with the sweep's
    steps = []
    from .load.stopping import STOP

    install_stop()
    for i, value in enumerate(scenario.sweep.values):
        if STOP.signum:  # stopped during the step before: the steps run so far make the sweep
            break
        sc = step(scenario, value)
        run_id = f"{sweep_id}-step{i + 1:02d}"
        print(f"sweep step {i + 1}/{len(scenario.sweep.values)}: {scenario.sweep.parameter} = {value}", flush=True)
        if kind == "bench":
            result, path = _one_run(sc, args, kind, os.path.join(root, f"step{i + 1:02d}"), run_id, target)
        else:
            from .results import save

            result = execute_load(sc, target, kind, run_id)
            path = save(result, os.path.join(root, f"step{i + 1:02d}"))
        print(summary_text(result, path), flush=True)
        steps.append((value, path, result))
    summary = summarise(scenario, steps, root, sweep_id)
    save_sweep(summary, root)
    release_stop()
    print(f"sweep: {len(steps)} steps in {root}/sweep.json")
    cut = len(steps) < len(scenario.sweep.values) or "interrupted" in steps[-1][2]
    if cut:
        print(f"  {STOP.name} stopped it in step {len(steps)} of {len(scenario.sweep.values)}")
    best = summary["sustainable"]
    if best is None:
        print("  no step met the thresholds")
    else:
        print(f"  sustainable: {scenario.sweep.parameter} = {best['value']} ({best['achieved_rate']:,.1f} msgs/s)")
    if not no_report:
        try:
            from .report import write_sweep_report

            print(f"  report: {write_sweep_report(root, os.path.join('reports', sweep_id))}")
        except ImportError as e:  # matplotlib missing: sweep.json is there; `smtpbench report` later
            print(f"  no report: {e}", file=sys.stderr)
        except OSError as e:  # the same: the sweep is saved, its report can be built later
            from .results import folder_error

            print(f"  no report: {folder_error(os.path.join('reports', sweep_id), e)}", file=sys.stderr)
    # A sweep is meant to cross the knee: it succeeds when it found a sustainable point.
    code = EXIT_OK if best is not None else max(_exit_code(r) for _, _, r in steps)
    return 128 + STOP.signum if cut else code


def _one_worker_on_unix(source: str, path: str, workers: int) -> None:
    """The sink's workers share a TCP port (SO_REUSEPORT); on a unix socket only one can listen."""
    if path and workers > 1:
        raise ScenarioError(f"{source}: key 'sink.workers': unix sockets take workers = 1 (SO_REUSEPORT is TCP only)")


def cmd_validate(args: argparse.Namespace) -> int:
    status = EXIT_OK
    for path in args.files:
        try:
            sc = load(path)
            # as `smtpbench sink` would refuse it (`bench` starts its sink on a TCP port of its own)
            _one_worker_on_unix(path, sc.sink.listen and parse_address(sc.sink.listen).path,
                                resolve_workers(sc.sink.workers))
        except ScenarioError as e:
            print(f"smtpbench: {e}", file=sys.stderr)
            status = EXIT_USAGE
            continue
        sweep = f", sweep over {sc.sweep.parameter} ({len(sc.sweep.values)} steps)" if sc.sweep else ""
        print(f"{path}: ok — {sc.name} ({sc.load.model} loop{sweep}), hash {sc.digest()}")
    return status


def cmd_scenarios(args: argparse.Namespace) -> int:
    import glob

    folder = args.dir or "scenarios"
    files = sorted(glob.glob(os.path.join(folder, "*.toml")))
    if not files:
        print(f"smtpbench: no scenarios in {folder}/", file=sys.stderr)
        return EXIT_USAGE
    width = max(len(f) for f in files)
    for path in files:
        try:
            sc = load(path)
            print(f"{path:<{width}}  {sc.description or sc.name}")
        except ScenarioError as e:
            print(f"{path:<{width}}  INVALID: {e}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from .report.build import build_report, read_each, report_dir
    from .sweep import is_sweep

    sweeps = [p for p in args.runs if is_sweep(p)]
    problems = []  # one line per path that is not a run or a sweep: the others are reported all the same
    if sweeps:  # a sweep folder (holding sweep.json): the sweep's report, with one per step inside
        from .report.sweep_build import build_sweep_report, sweep_report_dir
        from .sweep import load_sweep

        for path in sweeps:
            try:
                summary, folder = load_sweep(path)
            except ValueError as e:
                problems.append(str(e))
                continue
            out = args.out and (args.out if len(args.runs) == 1 else sweep_report_dir(summary, args.out))
            out = output_folder(out, sweep_report_dir(summary))
            print(f"report: {build_sweep_report(summary, folder, out)}")
    results, bad = read_each([p for p in args.runs if p not in sweeps])
    for result in results:
        folder = args.out and (args.out if len(args.runs) == 1 else report_dir(result, args.out))  # (a safe name)
        folder = output_folder(folder, report_dir(result))
        print(f"report: {build_report(result, folder)}")
    for problem in problems + bad:
        print(f"smtpbench report: {problem}", file=sys.stderr)
    return EXIT_USAGE if problems or bad else EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from .report.build import build_comparison, comparison_dir, read_runs
    from .report.compare import compare, summary_text

    try:
        results = read_runs([args.baseline, *args.contenders])
    except ValueError as e:
        print(f"smtpbench compare: {e}", file=sys.stderr)
        return EXIT_USAGE
    folder = output_folder(args.out, comparison_dir(results))
    comparison = compare(results[0], results[1:])
    path = build_comparison(results, folder, comparison)
    print(summary_text(results, comparison, path))
    return EXIT_OK


def cmd_locust(args: argparse.Namespace) -> int:
    from .integrations.cluster import StoppedBeforeStart, launch
    from .load.plan import connections

    if args.scenario_file and args.scenario:
        raise ScenarioError("give the scenario once: as SCENARIO or as --scenario")
    path = args.scenario_file or args.scenario
    source = path or "<defaults>"
    scenario = override(load(path), f"{source} (with command-line flags)", load__duration=args.duration)
    target = _target(args, scenario, source)
    text = args.workers or str(scenario.load.processes)
    if text != "auto" and not text.isdigit():
        raise ScenarioError(f"--workers: expected a number of processes (0 = one --headless process) or 'auto', got {text!r}")
    workers = min(resolve_workers(text), connections(scenario)) if text != "0" else 0  # (see plan.connections)
    if scenario.load.pipeline_messages:
        raise ScenarioError(f"{source}: key 'load.pipeline_messages': the Locust driver sends each message on its "
                            "own; chain them with smtpbench run")
    run_id = _new_run_id(scenario.name)
    folder = output_folder(args.out, f"results/{run_id}")
    try:
        code = launch(scenario, str(target), workers, folder, run_id, args.phases, args.locust_arg)
    except StoppedBeforeStart as e:
        print(f"\nsmtpbench locust: {e} before the test started: stopped, no result", file=sys.stderr)
        return 128 + e.signum
    result_path = os.path.join(folder, "result.json")
    if not os.path.exists(result_path):
        print(f"smtpbench locust: no result was written (Locust exited with {code}); see {folder}/", file=sys.stderr)
        return code or EXIT_INVALID
    if not args.no_report:
        report = _write_report(result_path, os.path.join("reports", run_id))
        if report:
            print(f"  report: {report}")
    return code


COMMANDS = {"sink": cmd_sink, "run": cmd_run, "bench": cmd_bench, "validate": cmd_validate,
            "scenarios": cmd_scenarios, "report": cmd_report, "compare": cmd_compare,
            "locust": cmd_locust}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # parse_args would blame the top-level parser and show its usage; the mistake is in the
        # command's flags, so show that command's usage (exit 2, as argparse does).
        given = sys.argv[1:] if argv is None else argv
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        before_command = given.index(unknown[0]) < given.index(args.command)
        (parser if before_command else commands.choices[args.command]).error(
            f"unrecognized arguments: {' '.join(unknown)}")
    eventloop.choose(getattr(args, "loop", None))
    try:
        return COMMANDS[args.command](args)
    except ScenarioError as e:
        print(f"smtpbench: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def program() -> None:
    """The ``smtpbench`` command: :func:`main`, then a quick exit (see :mod:`smtpbench.quickexit`).
    Output into a pipe whose reader has gone is dropped (see :mod:`smtpbench.closedpipe`)."""
    from .closedpipe import tolerate
    from .quickexit import exit_now

    tolerate()
    exit_now(main())


if __name__ == "__main__":  # pragma: no cover
    program()
