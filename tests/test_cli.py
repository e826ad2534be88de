"""The command line: help everywhere, JSON figures, and one-line errors for bad input."""

import json
import subprocess
import sys

import pytest

from espalier.cli import build_parser, main
from tests.imagegen import random_image
from weights.image import write_image

COMMANDS = [["train"], ["compress"], ["sensitivity"], ["inspect"], ["eval"], ["bench"],
            ["bench", "golden"], ["bench", "tradeoff"], ["bench", "decode"], ["sim"],
            ["load"], ["infer"], ["build"]]


@pytest.mark.parametrize("cmd", [[]] + COMMANDS)
def test_help_on_every_command(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    assert "usage: espalier" in capsys.readouterr().out


def test_every_subcommand_has_help_text():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == {"train", "compress", "sensitivity", "inspect", "eval", "bench",
                                "sim", "load", "infer", "build"}
    for action in sub._choices_actions:
        assert action.help


def test_inspect_json_keys(tmp_path, capsys):
    path = tmp_path / "net.img"
    path.write_bytes(write_image(random_image(2)))
    assert main(["inspect", str(path), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["total_bytes"] == path.stat().st_size
    assert rep["ratio"] == pytest.approx(rep["float32_bytes"] / rep["total_bytes"])
    assert [r["name"] for r in rep["layers"]] == ["conv1", "conv2", "fc1", "fc2"]
    for r in rep["layers"]:
        assert {"name", "kind", "weights", "nonzero", "weight_bits", "index_bits",
                "bytes"} <= set(r)
    # Layer bytes plus the 20-byte header and 4-byte CRC are the whole file.
    assert sum(r["bytes"] for r in rep["layers"]) + 24 == rep["total_bytes"]


def test_python_dash_m():
    """``python -m espalier`` is the ``espalier`` command."""
    proc = subprocess.run([sys.executable, "-m", "espalier", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: ")
    proc = subprocess.run([sys.executable, "-m", "espalier", "no-such-command"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


@pytest.mark.parametrize("cut", [0, 10, 30, -1])
def test_bad_image_is_one_line_and_exit_2(tmp_path, cut):
    data = write_image(random_image(2))
    path = tmp_path / "bad.img"
    path.write_bytes(data[:cut] if cut else b"")
    for cmd in (["inspect", str(path)], ["eval", str(path)], ["bench", "golden", str(path)]):
        proc = subprocess.run([sys.executable, "-m", "espalier.cli", *cmd], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("espalier: error: ")
        assert "bad.img" in lines[0] and "truncated" in lines[0]


def test_missing_files_and_wrong_inputs(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "none.img")]) == 2
    assert "none.img: cannot read" in capsys.readouterr().err
    out = tmp_path / "x.img"
    assert main(["compress", "--model", "lenet5", "--checkpoint", str(tmp_path / "no.pt"),
                 "--out", str(out)]) == 2
    assert "no.pt" in capsys.readouterr().err
    assert not out.exists()
    path = tmp_path / "net.img"
    path.write_bytes(write_image(random_image(2)))
    assert main(["eval", str(path)]) == 2  # a 2x9x9 network cannot read MNIST digits
    assert "not an MNIST 1x28x28" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["compress", "--model", "alexnet", "--out", str(out)])
    assert e.value.code == 2


def test_sim_refuses_bad_input(tmp_path, capsys):
    from pathlib import Path

    lenet5 = str(Path(__file__).resolve().parent.parent / "weights" / "images" / "lenet5.img")
    assert main(["sim", lenet5, "--config", "zynq"]) == 2
    assert "unknown accelerator preset 'zynq'" in capsys.readouterr().err
    assert main(["sim", lenet5, "--images", "0"]) == 2
    assert "--images" in capsys.readouterr().err
    path = tmp_path / "net.img"
    path.write_bytes(write_image(random_image(2)))
    assert main(["sim", str(path)]) == 2
    assert "not an MNIST 1x28x28" in capsys.readouterr().err


@pytest.mark.slow
def test_sim_json(capsys):
    """LeNet-300-100, one digit, through the simulated RTL (about 30 s)."""
    from pathlib import Path

    image = Path(__file__).resolve().parent.parent / "weights" / "images" / "lenet300.img"
    assert main(["sim", str(image), "--images", "1", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["images"] == 1 and rep["bit_exact"] == 1
    assert [e["name"] for e in rep["layers"]] == ["fc1", "fc2", "fc3"]
    assert rep["cycles_per_inference"] == sum(e["cycles"] for e in rep["layers"])
    for e in rep["layers"]:
        assert {"name", "cycles", "macs", "utilization"} <= set(e)
        assert e["utilization"] == pytest.approx(e["macs"] / (rep["pes"] * e["cycles"]))
        assert abs(e["model_error"]) <= 0.05, e


def test_link_commands_refuse_bad_ports(tmp_path, capsys):
    from pathlib import Path

    lenet5 = str(Path(__file__).resolve().parent.parent / "weights" / "images" / "lenet5.img")
    assert main(["load", lenet5, "--port", str(tmp_path / "no-such-tty")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-tty" in err[0]
    assert main(["infer", lenet5, "--port", "sim:zynq"]) == 2
    assert "unknown accelerator preset 'zynq'" in capsys.readouterr().err


@pytest.mark.slow
def test_infer_on_the_simulated_board(capsys):
    """The host link end to end: load LeNet-300-100 and classify two digits on sim:small."""
    from pathlib import Path

    image = Path(__file__).resolve().parent.parent / "weights" / "images" / "lenet300.img"
    assert main(["infer", str(image), "--port", "sim:small", "--load", "--digits", "2",
                 "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["images"] == 2 and rep["bit_exact"] == 2 and rep["correct"] == 2
    assert rep["predictions"] == [7, 2]
