"""Where a routed design's slow paths end: every timed endpoint, grouped by block.

nextpnr prints one critical path per clock. Its JSON report with
``--detailed-timing-report`` (nextpnr 0.11: ``TimingAnalyser::build_detailed_net_timing_report``)
holds more: for every endpoint (a flip-flop's or block RAM's input) the latest arrival
time of the clock's data there, under the net that feeds it. This script groups those
endpoints by block (the endpoint cell's dotted name without its own last part and
trailing numbers, cut to ``--depth`` parts) and prints, for each block, how many endpoints
miss the target period, the latest arrival and the net and RTL line that bring it.

``espalier build`` has nextpnr write that report as ``timing.json`` in the build
directory, so after ``espalier build --board ulx3s-85f``:

    .venv/bin/python benchmarks/slack.py build/ulx3s-85f/timing.json --period 10 [--depth 3]

``--ladder 60,70,80,100`` prints instead, for each clock, how many blocks and endpoints
miss its period: how the work left grows with the target.
``--path`` prints instead nextpnr's critical path of each clock step by step, with the
arrival after each step, the routing's share and each route's length in tiles (on the
ULX3S most of a path is routing: 12.2 of the 20.0 ns of session 15's build).

Arrival times are nextpnr's own (routing and cell delays of the routed design); a
block's "late" count is of its endpoints whose arrival plus ``--setup`` exceeds the
period, so it is the work left to reach that clock, block by block.
"""

import argparse
import collections
import json
import sys
from pathlib import Path


def block_of(cell: str, depth: int) -> str:
    """``accel.core.unit.fetch.f_addr_2_TRELLIS_FF_Q_15`` -> ``accel.core.unit.fetch``."""
    parts = cell.split(".")[:-1]
    while parts and parts[-1].isdigit():
        parts.pop()
    return ".".join(parts[:depth]) or cell


def endpoints(report: dict):
    """(arrival ns, endpoint cell, port, net, RTL sources) for every timed endpoint."""
    if "detailed_net_timings" not in report:
        raise ValueError("the report has no detailed_net_timings: run nextpnr with "
                         "--detailed-timing-report")
    for net in report["detailed_net_timings"]:
        for e in net["endpoints"]:
            yield (e["delay"][1], e["cell"], e["port"], net["net"],
                   [s for s in net.get("sources", []) if "/share/" not in s])


def summarize(report: dict, period: float, setup: float, depth: int) -> dict:
    groups = collections.defaultdict(list)
    for ep in endpoints(report):
        groups[block_of(ep[1], depth)].append(ep)
    rows = []
    for block, eps in groups.items():
        eps.sort(key=lambda e: -e[0])
        a, cell, port, net, src = eps[0]
        rows.append({
            "block": block,
            "endpoints": len(eps),
            "late": sum(1 for e in eps if e[0] + setup > period),
            "worst_ns": round(a + setup, 2),
            "worst_endpoint": f"{cell}.{port}",
            "worst_net": net,
            "worst_sources": src,
        })
    rows.sort(key=lambda r: -r["worst_ns"])
    fmax = {k: round(v["achieved"], 2) for k, v in report.get("fmax", {}).items()}
    return {"period_ns": period, "fmax_mhz": fmax,
            "endpoints": sum(r["endpoints"] for r in rows),
            "late": sum(r["late"] for r in rows), "blocks": rows}


def ladder(report: dict, mhz: list, setup: float, depth: int) -> list[dict]:
    """The work left at each clock of ``mhz``: ``mhz``, ``period_ns``, the ``blocks`` with an
    endpoint later than the period (at ``depth``) and those ``late`` endpoints."""
    rungs = []
    for f in mhz:
        s = summarize(report, 1000.0 / f, setup, depth)
        rungs.append({"mhz": f, "period_ns": round(1000.0 / f, 3),
                      "blocks": sum(1 for r in s["blocks"] if r["late"]),
                      "late": s["late"], "endpoints": s["endpoints"]})
    return rungs


def critical_paths(report: dict) -> list[dict]:
    """nextpnr's critical path of each clock, step by step: ``type`` (clk-to-q, logic,
    routing, setup), ``ns``, ``at`` (the arrival after the step), ``cell`` (where the step
    ends) and, for a route, ``tiles`` (the Manhattan distance between its ends); with the
    path's total ``ns`` and its ``routing_ns``."""
    paths = []
    for cp in report.get("critical_paths", []):
        steps, at = [], 0.0
        for st in cp.get("path", []):
            at += st["delay"]
            step = {"type": st["type"], "ns": round(st["delay"], 2), "at": round(at, 2),
                    "cell": st.get("to", {}).get("cell", "")}
            a, b = st.get("from", {}).get("loc"), st.get("to", {}).get("loc")
            if st["type"] == "routing" and a and b:
                step["tiles"] = abs(a[0] - b[0]) + abs(a[1] - b[1])
            steps.append(step)
        routing = sum(st["ns"] for st in steps if st["type"] == "routing")
        paths.append({"from": cp.get("from"), "to": cp.get("to"), "ns": round(at, 2),
                      "routing_ns": round(routing, 2), "steps": steps})
    return paths


def _figures(path: Path, figures):
    """``figures`` of the report at ``path``; a file that cannot be read or is not such a
    report ends the script with one line."""
    try:
        return figures(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"slack.py: {path}: {e}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path, help="nextpnr's --report JSON (with "
                                              "--detailed-timing-report)")
    ap.add_argument("--period", type=float, default=10.0, help="target period, ns "
                                                               "(default 10: 100 MHz)")
    ap.add_argument("--setup", type=float, default=0.2,
                    help="setup time added to each arrival, ns (default 0.2)")
    ap.add_argument("--depth", type=int, default=4, help="dotted name parts of a block")
    ap.add_argument("--rows", type=int, default=25, help="blocks to print (default 25)")
    ap.add_argument("--json", action="store_true", help="print every block as JSON")
    ap.add_argument("--path", action="store_true",
                    help="print nextpnr's critical path of each clock instead, step by "
                         "step (with --json: as JSON)")
    ap.add_argument("--ladder", metavar="MHZ,...",
                    help="print instead, for each clock (e.g. 60,70,80,100), how many "
                         "blocks (at --depth) and endpoints are later than its period: the "
                         "work left to reach it")
    args = ap.parse_args(argv)
    if args.ladder:
        try:
            mhz = [float(f) for f in args.ladder.split(",")]
            if not all(f > 0 for f in mhz):
                raise ValueError
        except ValueError:
            sys.exit(f"slack.py: --ladder takes clocks in MHz, such as 60,80,100, "
                     f"not {args.ladder!r}")
        rungs = _figures(args.report, lambda r: ladder(r, mhz, args.setup, args.depth))
        if args.json:
            print(json.dumps(rungs, indent=2))
            return
        print(f"| clock (MHz) | period (ns) | blocks late (depth {args.depth}) | "
              f"endpoints late |")
        print("|---|---|---|---|")
        for r in rungs:
            print(f"| {r['mhz']:g} | {r['period_ns']:g} | {r['blocks']} | "
                  f"{r['late']:,} of {r['endpoints']:,} |")
        return
    if args.path:
        paths = _figures(args.report, critical_paths)
        if args.json:
            print(json.dumps(paths, indent=2))
            return
        for p in paths:
            print(f"{p['from']} -> {p['to']}: {p['ns']} ns, {p['routing_ns']} of it routing")
            for st in p["steps"]:
                far = f" ({st['tiles']} tiles)" if "tiles" in st else ""
                print(f"  {st['type']:9} {st['ns']:6.2f} {st['at']:7.2f}  {st['cell']}{far}")
        return
    s = _figures(args.report, lambda r: summarize(r, args.period, args.setup, args.depth))
    if args.json:
        print(json.dumps(s, indent=2))
        return
    print(f"{s['endpoints']} endpoints, {s['late']} later than {args.period} ns; "
          f"nextpnr's Fmax: {s['fmax_mhz']}")
    print(f"\n| block | endpoints | later than {args.period} ns | latest (ns) | its net |")
    print("|---|---|---|---|---|")
    for r in s["blocks"][:args.rows]:
        src = f" ({', '.join(r['worst_sources'][:2])})" if r["worst_sources"] else ""
        print(f"| `{r['block']}` | {r['endpoints']} | {r['late']} | {r['worst_ns']} | "
              f"`{r['worst_net'][:70]}`{src} |")


if __name__ == "__main__":
    main()
