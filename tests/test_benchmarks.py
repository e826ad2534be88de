"""The benchmark scripts under benchmarks/ run and print what they claim."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hw.config import get_preset

ROOT = Path(__file__).resolve().parent.parent


def test_shapes_model_search():
    """The two-item drain is what lifts LeNet-5 conv1 on 13x10 past 80 % (issue 5), and
    the shipped ``ulx3s-85f`` preset is that shape."""
    cfg = get_preset("ulx3s-85f")
    ours = f"{cfg.rows}x{cfg.cols}x{cfg.drain_width}"
    out = subprocess.run([sys.executable, "benchmarks/shapes.py", "--json", "--shapes",
                          f"{ours},{cfg.rows}x{cfg.cols}x1"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    two, one = json.loads(out)
    assert two["pes"] >= 128
    assert all(u >= 0.8 for u in two["networks"]["lenet5"]["conv_utilization"])
    assert one["networks"]["lenet5"]["conv_utilization"][0] < 0.8
    assert two["networks"]["lenet5"]["cycles"] < one["networks"]["lenet5"]["cycles"]


def test_shapes_takes_a_lane_count():
    """Fewer decode lanes than columns: the fully connected layers get slower, and the
    table says how many lanes each row has."""
    out = subprocess.run([sys.executable, "benchmarks/shapes.py", "--json", "--shapes",
                          "13x10x2,13x10x2x5"], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout
    ten, five = json.loads(out)
    assert (ten["lanes"], five["lanes"]) == (10, 5)
    assert five["networks"]["lenet300"]["cycles"] > ten["networks"]["lenet300"]["cycles"]
    table = subprocess.run([sys.executable, "benchmarks/shapes.py", "--shapes", "13x10x2x5"],
                           cwd=ROOT, check=True, capture_output=True, text=True).stdout
    assert "| 13x10 | 130 | 2 | 5 |" in table


def test_shapes_refuses_a_bad_shape():
    proc = subprocess.run([sys.executable, "benchmarks/shapes.py", "--shapes", "8by8"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "not ROWSxCOLSxDRAIN" in proc.stderr


def test_fc_budget_splits_each_fc_layer():
    """The clocks to the streams' start are the entry and the later of the sequencer's
    work and the table's load (which overlap), hiding them can only lower the ratio; an
    unknown preset is refused with the known ones."""
    out = subprocess.run([sys.executable, "benchmarks/fc_budget.py", "--json", "--presets",
                          "small,ulx3s-85f"], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout
    result = json.loads(out)
    assert set(result) == {"small", "ulx3s-85f"}
    rows = result["ulx3s-85f"]
    lanes = get_preset("ulx3s-85f").decode_lanes
    assert len(rows) == 5  # LeNet-300's three fc layers, LeNet-5's two
    for r in rows:
        assert r["lanes"] == lanes and r["share"] == r["nonzero"] / lanes
        assert 0 < r["core_ratio"] < r["ratio"]
        assert r["ratio"] == r["cycles"] / r["share"]
        assert max(r["setup"], r["table"]) <= r["start"] < r["setup"] + r["table"]
    proc = subprocess.run([sys.executable, "benchmarks/fc_budget.py", "--presets", "nope"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "known: small" in proc.stderr


def test_fc_budget_reencodes_with_other_run_bits():
    """``--run-bits``: the shipped layer re-encoded with its own width is the shipped image
    byte for byte; a wider one keeps the weights and leaves the busiest lane fewer
    symbols (LeNet-5's last layer: fillers for runs over 7 zeros); bad specs are refused."""
    spec = importlib.util.spec_from_file_location("fc_budget",
                                                  ROOT / "benchmarks" / "fc_budget.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from weights.image import read_image_file, write_image
    path = ROOT / "weights" / "images" / "lenet5.img"
    image = read_image_file(path)
    same = module.with_run_bits(image, 3, image.layers[3].run_bits)
    assert write_image(same) == path.read_bytes()
    wider = module.with_run_bits(image, 3, 5)
    assert wider.layers[3].run_bits == 5 != image.layers[3].run_bits
    assert (wider.layers[3].weights() == image.layers[3].weights()).all()
    assert wider.layers[3].symbol_count() < image.layers[3].symbol_count()
    before = {(r["image"], r["layer"]): r for r in module.fc_budget("small")}
    after = {(r["image"], r["layer"]): r
             for r in module.fc_budget("small", module.parse_run_bits(["lenet5:3=5"]))}
    assert after[("lenet5", 3)]["lanes_ratio"] < before[("lenet5", 3)]["lanes_ratio"]
    assert after[("lenet5", 3)]["image_bytes"] != before[("lenet5", 3)]["image_bytes"]
    assert after[("lenet300", 0)] == before[("lenet300", 0)]
    for bad, says in (("lenet5:3", "IMAGE:LAYER=R"), ("nope:1=3", "no shipped image"),
                      ("lenet5:0=3", "fully connected layers are 2, 3"),
                      ("lenet5:3=9", "0..8")):
        proc = subprocess.run([sys.executable, "benchmarks/fc_budget.py", "--run-bits", bad],
                              cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 2 and says in proc.stderr, (bad, proc.stderr)


def test_deal_order_model():
    """The deal model's busiest lane on a known case (a long channel dealt last lands on a
    lane that already has one: 8 clocks; dealt first: 6), and on the shipped images: the
    rates are at most 1, dropping the end clock never lowers one, and a bad lane count is
    refused."""
    spec = importlib.util.spec_from_file_location("deal_order",
                                                  ROOT / "benchmarks" / "deal_order.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _busiest = module._busiest
    sizes = symbols = [1, 1, 5]
    assert _busiest(sizes, symbols, [0, 1, 2], 2, 1) == 8
    assert _busiest(sizes, symbols, [2, 0, 1], 2, 1) == 6
    assert _busiest(sizes, symbols, [2, 0, 1], 2, 0) == 5
    out = subprocess.run([sys.executable, "benchmarks/deal_order.py", "--json", "--lanes",
                          "10"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    result = json.loads(out)
    assert set(result) == {"lenet300", "lenet5"}
    for r in result.values():
        assert r["lanes"] == 10
        for row in [*r["layers"], r]:
            assert 0 < row["stored"] <= 1 and 0 < row["longest_first"] <= 1
            assert row["longest_first"] <= row["no_end_clock"] <= 1
    proc = subprocess.run([sys.executable, "benchmarks/deal_order.py", "--lanes", "0"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "at least 1" in proc.stderr


def test_heatmap_summary(tmp_path):
    """A made-up pair of router2 heatmap files: per block, per group of nets (numbers as
    N) and per 8 x 8-tile window; a missing iteration is refused."""
    prefix = tmp_path / "hm"
    (tmp_path / "hm_congestion_by_net_3.csv").write_text(
        "accel.core.tiles.s_k1[4],10\naccel.core.tiles.s_k7[0],5\n"
        "accel.core.unit.path.decoder_2.buf_LUT4_Z[1],4\nrst,1\n")
    grid = [[0] * 12 for _ in range(20)]
    grid[17][9], grid[3][2] = 7, 2
    (tmp_path / "hm_congestion_by_coordinate_3.csv").write_text(
        "".join(",".join(map(str, row)) + ",\n" for row in grid))
    out = subprocess.run([sys.executable, "benchmarks/heatmap.py", str(prefix), "--iter", "3",
                          "--json"], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout
    r = json.loads(out)
    assert r["overused"] == 20
    assert r["blocks"][0] == ["accel.core.tiles", 15]
    assert ["accel.core.tiles.s_kN[N]", 15, 2] in r["groups"]
    assert ["accel.core.unit.path.decoder_N", 4, 1] in r["groups"]
    assert r["windows"][:2] == [[16, 8, 7], [0, 0, 2]]
    proc = subprocess.run([sys.executable, "benchmarks/heatmap.py", str(prefix), "--iter",
                           "4"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "no heatmap file" in proc.stderr


def test_slack_groups_endpoints_by_block(tmp_path):
    """A made-up nextpnr report: endpoints grouped by block (RAM cells' trailing numbers
    dropped), the late ones counted against the period with the setup added, blocks
    ordered by their latest arrival; a report without detailed timings is refused."""
    def ep(cell, port, t):
        return {"cell": cell, "port": port, "delay": [t / 2, t],
                "event": "posedge clk"}
    report = {"fmax": {"clk": {"achieved": 47.25, "constraint": 100}},
              "detailed_net_timings": [
                  {"net": "accel.core.unit.fetch.i_addr[3]", "driver": "x", "port": "Q",
                   "sources": ["/work/main/hw/stream_fetch.py:150"],
                   "endpoints": [ep("accel.core.image.ram.0.9", "ADA5", 20.9),
                                 ep("accel.core.image.ram.0.10", "ADA5", 9.9)]},
                  {"net": "n2", "driver": "y", "port": "F", "sources": [],
                   "endpoints": [ep("accel.core.feed.k_TRELLIS_FF_Q_3", "DI", 12.0),
                                 ep("accel.core.feed.k_TRELLIS_FF_Q_4", "DI", 3.0)]}]}
    path = tmp_path / "timing.json"
    path.write_text(json.dumps(report))
    out = subprocess.run([sys.executable, "benchmarks/slack.py", str(path), "--json"],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    r = json.loads(out)
    assert (r["endpoints"], r["late"], r["fmax_mhz"]) == (4, 3, {"clk": 47.25})
    assert [(b["block"], b["endpoints"], b["late"], b["worst_ns"]) for b in r["blocks"]] == [
        ("accel.core.image.ram", 2, 2, 21.1), ("accel.core.feed", 2, 1, 12.2)]
    assert r["blocks"][0]["worst_endpoint"] == "accel.core.image.ram.0.9.ADA5"
    assert r["blocks"][0]["worst_sources"] == ["/work/main/hw/stream_fetch.py:150"]
    # --ladder: blocks and endpoints late at each clock (setup 0.2 ns added)
    out = subprocess.run([sys.executable, "benchmarks/slack.py", str(path), "--ladder",
                          "40,80,100,200", "--json"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    assert [(r["mhz"], r["blocks"], r["late"]) for r in json.loads(out)] == [
        (40, 0, 0), (80, 1, 1), (100, 2, 3), (200, 2, 3)]
    text = subprocess.run([sys.executable, "benchmarks/slack.py", str(path), "--ladder",
                           "100"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    assert "| 100 | 10 | 2 | 3 of 4 |" in text
    proc = subprocess.run([sys.executable, "benchmarks/slack.py", str(path), "--ladder",
                           "60,x"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and "--ladder takes clocks" in proc.stderr
    del report["detailed_net_timings"]
    path.write_text(json.dumps(report))
    proc = subprocess.run([sys.executable, "benchmarks/slack.py", str(path)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "--detailed-timing-report" in proc.stderr


def test_slack_prints_the_critical_path(tmp_path):
    """A made-up critical path: cumulative arrival, routing total and each route's
    distance in tiles, as text and as JSON."""
    def step(kind, ns, cell, a, b):
        return {"type": kind, "delay": ns, "from": {"cell": "x", "loc": a},
                "to": {"cell": cell, "loc": b}}
    report = {"critical_paths": [{"from": "posedge clk", "to": "posedge clk", "path": [
        step("clk-to-q", 5.8, "dec.symbols", [1, 2], [1, 2]),
        step("routing", 2.3, "dec.lut", [1, 2], [4, 6]),
        step("logic", 0.25, "dec.lut", [4, 6], [4, 6]),
        step("routing", 1.0, "dec.bits", [4, 6], [4, 5]),
        step("setup", 0.0, "dec.bits", [4, 5], [4, 5])]}]}
    path = tmp_path / "timing.json"
    path.write_text(json.dumps(report))
    out = subprocess.run([sys.executable, "benchmarks/slack.py", str(path), "--path",
                          "--json"], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout
    (p,) = json.loads(out)
    assert (p["ns"], p["routing_ns"]) == (9.35, 3.3)
    assert [(s["type"], s["at"], s.get("tiles")) for s in p["steps"]] == [
        ("clk-to-q", 5.8, None), ("routing", 8.1, 7), ("logic", 8.35, None),
        ("routing", 9.35, 1), ("setup", 9.35, None)]
    text = subprocess.run([sys.executable, "benchmarks/slack.py", str(path), "--path"],
                          cwd=ROOT, check=True, capture_output=True, text=True).stdout
    assert "9.35 ns, 3.3 of it routing" in text and "dec.lut (7 tiles)" in text


def test_hierarchy_parses_yosys_stat():
    """A made-up `stat` of a two-level design: each block's own cells, the hierarchy
    summary skipped; an unknown board is refused with the known ones."""
    spec = importlib.util.spec_from_file_location("hierarchy",
                                                  ROOT / "benchmarks" / "hierarchy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parse_stat = module.parse_stat
    text = ("=== top ===\n\n   Number of cells: 5\n     3   SB_LUT4\n     2   SB_DFFESR\n\n"
            "=== top.accel.core.array.pe_0_0 ===\n\n     1   SB_MAC16\n    29   SB_LUT4\n"
            "    40   SB_DFFE\n    25   SB_DFFESR\n     2   SB_RAM40_4K\n\n"
            "=== design hierarchy ===\n\n    99   SB_LUT4\n")
    assert parse_stat(text, "ice40") == [
        {"block": "top", "lut4": 3, "ff": 2, "dsp": 0, "bram": 0},
        {"block": "top.accel.core.array.pe_0_0", "lut4": 29, "ff": 65, "dsp": 1, "bram": 2}]
    ecp5 = "=== top ===\n\n    7   LUT4\n    4   TRELLIS_FF\n    1   MULT18X18D\n"
    assert parse_stat(ecp5, "ecp5") == [
        {"block": "top", "lut4": 7, "ff": 4, "dsp": 1, "bram": 0}]
    proc = subprocess.run([sys.executable, "benchmarks/hierarchy.py", "--board", "nope"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "known boards: icebreaker, ulx3s-85f" in proc.stderr
    # --set is checked before any synthesis
    for bad, says in (("nope=1", "FIELD one of"), ("acc_width=3", "at least 26 bits")):
        proc = subprocess.run([sys.executable, "benchmarks/hierarchy.py", "--board",
                               "icebreaker", "--set", bad], cwd=ROOT, capture_output=True,
                              text=True)
        assert proc.returncode == 2 and says in proc.stderr, (bad, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "yowasp" not in proc.stderr


@pytest.mark.slow
def test_hierarchy_of_the_icebreaker_build():
    """The real synthesis (about 2 minutes): the UP5K's 8 SB_MAC16 are all the array's
    (fc_on_array): seven in their PEs, PE (0, 0)'s in the core, where the fc lane shares
    it; the fc path has none."""
    out = subprocess.run([sys.executable, "benchmarks/hierarchy.py", "--board", "icebreaker",
                          "--json"], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout
    rows = {r["block"]: r for r in json.loads(out)}
    pes = [b for b in rows if ".array.pe_" in b]
    assert len(pes) == 8 and sum(rows[b]["dsp"] for b in pes) == 7
    assert rows["top.accel.core.array.pe_0_0"]["dsp"] == 0
    assert rows["top.accel.core"]["dsp"] == 1 and rows["top.accel.core.fc"]["dsp"] == 0
    assert sum(r["dsp"] for r in rows.values()) == 8
    assert rows["top.accel.core.unit.path.decoder_0"]["lut4"] > 0
    assert sum(r["lut4"] for r in rows.values()) > 1000
    # --set replaces a field of the board's preset: the serial decoder is the smaller
    out = subprocess.run([sys.executable, "benchmarks/hierarchy.py", "--board", "icebreaker",
                          "--set", "serial_decoder=true", "--json"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    serial = {r["block"]: r for r in json.loads(out)}
    decoder = "top.accel.core.unit.path.decoder_0"
    assert 0 < serial[decoder]["lut4"] < rows[decoder]["lut4"] / 2


def test_packing_counts_lone_flip_flops():
    """A made-up flattened netlist: a flip-flop behind its own LUT4 packs with it; one
    behind another flip-flop, behind a LUT4 that drives two flip-flops, or behind an
    SB_MAC16 is lone, and is counted at its source line."""
    spec = importlib.util.spec_from_file_location("packing", ROOT / "benchmarks" / "packing.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def cell(kind, src, **ports):
        return {"type": kind, "attributes": {"src": src},
                "port_directions": {p: ("output" if p in ("O", "Q") else "input")
                                    for p in ports},
                "connections": ports}

    cells = {
        "lut_a": cell("SB_LUT4", "", I0=[2], O=[10]),
        "ff_a": cell("SB_DFF", "/x/hw/pe.py:5|/share/ff_map.v:1", D=[10], Q=[11]),
        "ff_copy": cell("SB_DFFE", "/x/hw/pe.py:6", D=[11], Q=[12]),
        "lut_b": cell("SB_LUT4", "", I0=[3], O=[20]),
        "ff_b1": cell("SB_DFF", "/x/hw/sequencer.py:9", D=[20], Q=[21]),
        "ff_b2": cell("SB_DFF", "/x/hw/sequencer.py:9", D=[20], Q=[22]),
        "mac": cell("SB_MAC16", "", A=[4], O=[30]),
        "ff_mac": cell("SB_DFFESR", "/x/hw/pe.py:7", D=[30], Q=[31]),
        "carry": cell("SB_CARRY", "", I0=[5], CO=[40]),
    }
    cells["carry"]["port_directions"]["CO"] = "output"
    got = module.lone_flip_flops({"modules": {"top": {"cells": cells}}})
    assert got["totals"] == {"lut4": 2, "ff": 5, "lone": 4, "carry": 1}
    assert got["files"] == {"hw/pe.py": {"ff": 3, "lone": 2},
                            "hw/sequencer.py": {"ff": 2, "lone": 2}}
    assert got["lines"] == {"hw/pe.py:6": 1, "hw/sequencer.py:9": 2, "hw/pe.py:7": 1}
    # --set replaces preset fields; bad ones are refused before any synthesis
    assert module.preset_with([]) is None
    cfg = module.preset_with(["max_code_len=15", "row_broadcast=false"])
    assert cfg.max_code_len == 15 and cfg.row_broadcast is False
    assert cfg.cols == get_preset("icebreaker").cols
    for bad, says in (("nope=1", "FIELD one of"), ("cols=x", "integer, true or false"),
                      ("acc_width=3", "at least 26 bits")):
        proc = subprocess.run([sys.executable, "benchmarks/packing.py", "--set", bad],
                              cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 2 and says in proc.stderr, (bad, proc.stderr)
    # --blocks: each module of an unflattened netlist on its own, most cells first
    rows = module.blocks({"modules": {
        "top": {"cells": {k: cells[k] for k in ("lut_a", "ff_a")}},
        "top.pe": {"cells": {k: cells[k] for k in ("mac", "ff_mac", "ff_copy")}},
        "SB_MAC16": {"attributes": {"blackbox": 1}, "cells": {}}}})
    assert rows == [{"block": "top.pe", "lut4": 0, "ff": 2, "lone": 2, "cells": 2},
                    {"block": "top", "lut4": 1, "ff": 1, "lone": 0, "cells": 1}]
    # --split: the control's blocks (with their submodules, Yosys's "$" names included, and
    # the board top's glue) against everything else
    def row(block, cells):
        return {"block": block, "lut4": cells, "ff": 1, "lone": 1, "cells": cells + 1}
    parts = module.split([
        row("top", 1), row("top.uart_rx", 2), row("top.lock_sync", 4),
        row("top.accel.core.sequencer", 8), row("top.accel.core.unit.loader", 16),
        row("top.accel.core.unit.loader.crc", 32), row("top.accel.host.crc$69", 64),
        row("top.accel", 128), row("top.accel.core.unit.path.decoder_0", 256),
        row("top.accel.core.unit", 512), row("top.accel.core.array.pe_0_0", 1024)])
    assert parts["control"] == {"lut4": 127, "ff": 7, "lone": 7, "cells": 134}
    assert parts["datapath"] == {"lut4": 1920, "ff": 4, "lone": 4, "cells": 1924}
    assert parts["device_cells"] == 5280


def test_fc_stages_measures_each_fc_layer():
    """The stage probe on the simulated core: a random network's two fully connected layers
    on ``small``; each stage's transfers are the layer's (its stream bytes, a sum and an
    activation a channel), in pipeline order, with a tail after the last weight."""
    from tests.imagegen import random_image
    from weights.image import write_image

    spec = importlib.util.spec_from_file_location("fc_stages", ROOT / "benchmarks/fc_stages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    image = random_image(3)
    rows = module.measure(get_preset("small"), write_image(image))
    assert [r["layer"] for r in rows] == [2, 3]
    for r in rows:
        layer = image.layers[r["layer"]]
        st = r["stages"]
        lanes = [j for j in range(2) if f"fetch{j}" in st]
        assert sum(st[f"fetch{j}"]["count"] for j in lanes) == sum(map(len, layer.streams))
        assert st["fc_out"]["count"] == st["post_wr"]["count"] == layer.out_c
        assert st["decode"]["first"] <= st["go"]["first"]
        for j in lanes:
            assert (st["go"]["first"] < st[f"fetch{j}"]["first"] < st[f"path{j}"]["first"]
                    < st[f"fc_in{j}"]["first"] <= st[f"fc_in{j}"]["last"] < st["fc_out"]["last"])
        assert st["fc_out"]["last"] < st["post_wr"]["last"] < r["cycles"]
        assert r["tail"] > 0 and r["bytes_to_weights"] > 0
    proc = subprocess.run([sys.executable, "benchmarks/fc_stages.py", "--presets", "nope"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "known presets" in proc.stderr


def test_synth_decode_stops_its_tool_on_sigterm(tmp_path):
    """``benchmarks/synth_decode.py`` killed with SIGTERM stops the tool it waits for (a
    stand-in Yosys, through the board build's ``YOSYS`` variable) and exits 130."""
    fake = tmp_path / "yosys"
    fake.write_text(f"#!{sys.executable}\nimport os, pathlib, time\n"
                    "pathlib.Path('yosys.pid').write_text(str(os.getpid()))\ntime.sleep(120)\n")
    fake.chmod(0o755)
    proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "synth_decode.py"),
                             "--board", "icebreaker", "--block", "symbol_split", "--no-pnr"],
                            cwd=tmp_path, env={**os.environ, "YOSYS": str(fake)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid_file = tmp_path / "build" / "synth_decode" / "icebreaker-symbol_split" / "yosys.pid"
    deadline = time.monotonic() + 120
    while not pid_file.exists() or not pid_file.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    pid = int(pid_file.read_text())
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
