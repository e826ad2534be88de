"""The ``espalier`` command: train, compress, inspect, eval, sim and bench.

Every command that reports figures prints a table for people, or JSON with ``--json``.
Errors in the user's input (a bad image, a missing file, an unknown model) print one line
and exit with status 2; progress goes to stderr.
"""

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("lenet300", "lenet5")
CHECKPOINTS = ROOT / "weights" / "checkpoints"


class UserError(Exception):
    """An error the user can fix; printed as one line."""


def _progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _emit(args, payload: dict, table: str) -> None:
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        print(table)


def _load_image(path):
    from weights.image import ImageError, read_image_file

    try:
        return read_image_file(path)
    except ImageError as e:
        raise UserError(str(e)) from None


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file and a rename, so a failure leaves no half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    tmp.replace(path)


# ---------------------------------------------------------------------------------------


def _checkpoint_path(args, option: str = "checkpoint") -> Path:
    """The checkpoint the user named with ``--OPTION``, or the shipped one of ``--model``."""
    given = getattr(args, option, None)
    return Path(given) if given else CHECKPOINTS / f"{args.model}.pt"


def _load_checkpoint(path: Path, model_name: str):
    from weights.train import load_checkpoint

    try:
        model, info = load_checkpoint(path)
    except FileNotFoundError:
        raise UserError(f"{path}: no such checkpoint (make one with "
                        f"'espalier train --model {model_name}')") from None
    except ValueError as e:
        raise UserError(str(e)) from None
    if info.get("model") != model_name:
        raise UserError(f"{path} holds a {info.get('model')} model, not {model_name}")
    return model, info


def _mnist(split: str):
    from weights.datasets import DatasetError, load_mnist

    try:
        return load_mnist(split)
    except DatasetError as e:
        raise UserError(str(e)) from None


def cmd_train(args) -> int:
    from weights.train import save_checkpoint, train_model

    def progress(epoch, epochs, batch, batches, loss):
        _progress(f"epoch {epoch}/{epochs} batch {batch}/{batches} loss {loss:.4f}")

    out = _checkpoint_path(args, "out")
    _mnist("train"), _mnist("test")  # a missing or corrupt data file is a one-line error
    model, info = train_model(args.model, seed=args.seed, epochs=args.epochs, progress=progress)
    save_checkpoint(model, info, out)  # atomic: written to a temporary file, then renamed
    info = dict(info, checkpoint=str(out))
    _emit(args, info, f"{args.model}: test error {info['test_error_pct']:.2f} % after "
                      f"{info['epochs']} epochs ({info['train_seconds']:.0f} s) -> {out}")
    return 0


def cmd_compress(args) -> int:
    from weights.pipeline import compress_shipped

    checkpoint = _checkpoint_path(args)
    model, info = _load_checkpoint(checkpoint, args.model)
    train = _mnist("train")
    out = Path(args.out)
    _, data, report = compress_shipped(args.model, model, info, train, seed=args.seed,
                                       progress=_progress)
    _write_atomic(out, data)
    arrays = report.pop("arrays")
    if args.plots:
        from espalier.plots import plot_weights

        plot_dir = Path(args.plots)
        plot_dir.mkdir(parents=True, exist_ok=True)
        plot_weights(arrays, plot_dir / f"{args.model}-weights.png",
                     f"{args.model}: weights before and after pruning, shared centroids")
    report = dict(report, out=str(out), checkpoint=str(checkpoint))
    _emit(args, report, f"{args.model}: {len(data)} bytes written to {out} "
                        f"in {report['seconds']:.1f} s")
    return 0


def cmd_sensitivity(args) -> int:
    import dataclasses

    from weights.compress import extract_units
    from weights.datasets import to_float
    from weights.prune import sensitivity

    checkpoint = _checkpoint_path(args)
    model, _ = _load_checkpoint(checkpoint, args.model)
    x, y = _mnist("train")
    x, y = to_float(x[-args.images:]), y[-args.images:]
    layers = {u.label: u.module for u in extract_units(model, (1, 28, 28))}
    curves = sensitivity(model, layers, x, y, progress=_progress)
    rep = dict(model=args.model, images=len(y), data="last images of the MNIST training set",
               curves=[dataclasses.asdict(c) for c in curves])
    if args.plot:
        from espalier.plots import plot_sensitivity

        plot_sensitivity(curves, f"{args.model}: pruning sensitivity (no retraining)", args.plot)
    rows = ["layer  " + " ".join(f"{100 * (1 - k):>5.0f}%" for k in curves[0].keep)
            + "   (pruned; error % below)"]
    for c in curves:
        rows.append(f"{c.layer:6} " + " ".join(f"{e:6.2f}" for e in c.error_pct))
    _emit(args, rep, "\n".join(rows))
    return 0


def inspect_report(image, data_size: int) -> dict:
    """The figures of ``espalier inspect``: sizes, ratio and per-layer statistics."""
    import numpy as np

    from weights.entropy import coding_costs
    from weights.image import Kind, layer_bytes

    layers = []
    float_params = 0
    for name, layer, nbytes, cost in zip(image.layer_names(), image.layers, layer_bytes(image),
                                         coding_costs(image), strict=True):
        w = layer.weights()
        symbols = layer.symbol_count()
        stream_bits = 8 * sum(len(s) for s in layer.streams)
        float_params += w.size + layer.out_c
        layers.append(dict(
            name=name, kind="conv" if layer.kind == Kind.CONV else "fc", weights=int(w.size),
            nonzero=int(np.count_nonzero(w)), weight_bits=layer.index_bits,
            index_bits=layer.run_bits, bytes=nbytes,
            codebook=len(layer.codebook), symbols=symbols, stream_bytes=stream_bits // 8,
            bits_per_nonzero=stream_bits / max(1, int(np.count_nonzero(w))),
            max_code_len=layer.table.max_len, bias_bits=layer.bias_bits,
            w_fl=layer.w_fl, b_fl=layer.b_fl, out_fl=layer.out_fl,
            # Deep Compression's Table 2/3 columns: weights+indices of this layer after
            # pruning (float32 values), + quantization (fixed-width codes), + Huffman (as
            # stored, table included); ratios against the layer's float32 weights.
            bytes_p=cost["pruned"], bytes_pq=cost["quantized"], bytes_pqh=cost["joint"],
            ratio_p=4 * w.size / cost["pruned"], ratio_pq=4 * w.size / cost["quantized"],
            ratio_pqh=4 * w.size / cost["joint"], bytes_separate_huffman=cost["separate"],
            symbols_per_nonzero=cost["symbols_per_weight_joint"]))
    return dict(total_bytes=data_size, float32_bytes=4 * float_params,
                ratio=4 * float_params / data_size, bw=image.bw, input_fl=image.input_fl,
                layers=layers)


def cmd_inspect(args) -> int:
    image = _load_image(args.image)
    rep = inspect_report(image, Path(args.image).stat().st_size)
    rows = [f"{'layer':6} {'kind':4} {'weights':>8} {'nonzero':>8} {'kept%':>6} {'wbits':>5} "
            f"{'ibits':>5} {'bytes':>7} {'bits/nz':>7} {'fl w/b/out':>10}"]
    for r in rep["layers"]:
        rows.append(f"{r['name']:6} {r['kind']:4} {r['weights']:8d} {r['nonzero']:8d} "
                    f"{100 * r['nonzero'] / r['weights']:6.1f} {r['weight_bits']:5d} "
                    f"{r['index_bits']:5d} {r['bytes']:7d} {r['bits_per_nonzero']:7.2f} "
                    f"{r['w_fl']:>3}/{r['b_fl']}/{r['out_fl']}")
    rows.append(f"total {rep['total_bytes']} bytes (float32 {rep['float32_bytes']} bytes): "
                f"{rep['ratio']:.1f}x; {rep['bw']}-bit data, input fl {rep['input_fl']}")
    _emit(args, rep, "\n".join(rows))
    return 0


def _check_mnist_input(image, path) -> None:
    if image.input_shape != (1, 28, 28):
        raise UserError(f"{path}: its input is {image.input_shape}, not an MNIST 1x28x28")


def cmd_eval(args) -> int:
    import numpy as np

    from golden.model import GoldenModel
    from weights.datasets import to_float

    image = _load_image(args.image)
    _check_mnist_input(image, args.image)
    x, y = _mnist("test")
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    t0 = time.perf_counter()
    model = GoldenModel(image)
    pred = model.predict(to_float(x))
    correct = int(np.sum(pred == y))
    n = len(y)
    rep = dict(images=n, correct=correct, accuracy=correct / n,
               error_pct=100.0 * (n - correct) / n, seconds=time.perf_counter() - t0)
    _emit(args, rep, f"{correct}/{n} correct: accuracy {100 * correct / n:.2f} %, "
                     f"error {rep['error_pct']:.2f} % (golden model, {rep['seconds']:.1f} s)")
    return 0


def cmd_bench_golden(args) -> int:
    from espalier.bench import bench_golden

    image = _load_image(args.image)
    _check_mnist_input(image, args.image)
    _mnist("test")
    rep = bench_golden(image, repeats=args.repeats, progress=_progress)
    _emit(args, rep, (
        f"golden model: {rep['images']} images in {rep['golden_seconds']:.2f} s "
        f"= {rep['golden_images_per_s']:.0f} images/s (median of {rep['repeats']})\n"
        f"torch float:  {rep['torch_images_per_s']:.0f} images/s; golden / torch = "
        f"{rep['ratio_to_torch']:.2f}\n"
        f"one thread each; golden error {rep['golden_error_pct']:.2f} %"))
    return 0


def cmd_bench_decode(args) -> int:
    from espalier.bench_decode import bench_decode
    from weights.image import ImageError

    data = _read_bytes(args.image)
    _load_image(args.image)  # a bad image: one line naming the file and what is wrong

    def progress(done, total, layer):
        _progress(f"layer {done}/{total} simulated")

    _config(args)  # an unknown preset or a bad --set: one line, before any simulation
    try:
        rep = bench_decode(data, args.config, progress=progress, settings=args.set)
    except (ImageError, ValueError) as e:
        raise UserError(f"{args.image}: {e}") from None
    rows = [f"{args.image} on {_config_name(args)}: {rep['symbols']} symbols in "
            f"{rep['cycles']} cycles on {rep['lanes']} lanes = "
            f"{rep['symbols_per_cycle_per_lane']:.3f} symbols per cycle per lane (simulated "
            f"at {rep['sim_cycles_per_s']:.0f} cycles/s)"]
    _emit(args, rep, "\n".join(rows))
    return 0


def _config(args):
    """The ``--config`` preset with the ``--set`` settings applied; a UserError for an
    unknown preset or a bad setting."""
    from hw.config import get_preset, with_settings

    try:
        return with_settings(get_preset(args.config), args.set)
    except ValueError as e:
        raise UserError(str(e)) from None


def _config_name(args) -> str:
    """The preset's name, with the ``--set`` settings if any (for reports)."""
    return args.config + "".join(f" {s}" for s in args.set)


def cmd_sim(args) -> int:
    from espalier.sim import simulate
    from golden.model import GoldenModel
    from weights.datasets import to_float

    config = _config(args)
    if args.images < 1:
        raise UserError(f"--images must be at least 1, not {args.images}")
    data = _read_bytes(args.image)
    image = _load_image(args.image)
    _check_mnist_input(image, args.image)
    x, _ = _mnist("test")
    if args.images > len(x):
        raise UserError(f"--images {args.images}: the MNIST test set has {len(x)}")
    golden = GoldenModel(image)
    inputs = list(golden.quantize_input(to_float(x[:args.images])))
    try:
        rep = simulate(data, config, inputs, vcd=args.vcd, progress=_progress)
    except ValueError as e:
        raise UserError(f"{args.image} on {_config_name(args)}: {e}") from None
    rep = {"image": str(args.image), "config": args.config, "settings": list(args.set), **rep}
    rows = [f"{args.image} on {_config_name(args)} ({rep['pes']} PEs, {rep['decode_lanes']} decode "
            f"lanes): {rep['bit_exact']}/{rep['images']} images bit-exact in every layer",
            f"{'layer':<7}{'cycles':>10}{'MACs':>12}{'util':>8}{'model':>10}"
            f"{'err':>7}"]
    for e in rep["layers"]:
        rows.append(f"{e['name']:<7}{e['cycles']:>10}{e['macs']:>12}"
                    f"{100 * e['utilization']:>7.1f}%{e['model_cycles']:>10}"
                    f"{100 * e['model_error']:>6.1f}%")
    rows.append(f"cycles per inference: {rep['cycles_per_inference']} (tables "
                f"{'resident' if rep['resident'] else 'loaded layer by layer'}; the load "
                f"took {rep['load_cycles']} cycles); simulated at "
                f"{rep['sim_cycles_per_second']:.0f} cycles/s")
    _emit(args, rep, "\n".join(rows))
    return 0 if rep["bit_exact"] == rep["images"] else 1


def _device(args):
    from espalier.link import open_device

    try:
        return open_device(args.port, baud=args.baud, progress=_progress)
    except ImportError as e:
        raise UserError(str(e)) from None
    except (ValueError, OSError) as e:
        raise UserError(f"{args.port}: {e}") from None


def _on_device(args, work):
    """``work(device)`` on ``--port``; its errors (a bad image, a link or device error)
    become one line, and the port is closed whatever happens."""
    from espalier.host import DeviceError, IncompatibleDevice, LinkError

    dev = _device(args)
    try:
        return work(dev)
    except ValueError as e:
        raise UserError(f"{args.image}: {e}") from None
    except (LinkError, DeviceError, IncompatibleDevice) as e:
        raise UserError(f"{args.port}: {e}") from None
    finally:
        dev.transport.close()


def cmd_load(args) -> int:
    from espalier.link import load

    data = _read_bytes(args.image)
    _load_image(args.image)
    rep = _on_device(args, lambda dev: load(dev, data))
    _emit(args, {"image": str(args.image), "port": args.port, **rep},
          f"{args.image}: {rep['bytes']} bytes, {rep['n_layers']} layers loaded on "
          f"{args.port} (tables "
          f"{'resident' if rep['resident'] else 'loaded layer by layer as it runs'})")
    return 0


def cmd_infer(args) -> int:
    from espalier.link import infer, load
    from golden.model import GoldenModel
    from weights.datasets import to_float

    data = _read_bytes(args.image)
    image = _load_image(args.image)
    _check_mnist_input(image, args.image)
    if args.digits < 1:
        raise UserError(f"--digits must be at least 1, not {args.digits}")
    x, y = _mnist("test")
    inputs = GoldenModel(image).quantize_input(to_float(x[:args.digits]))

    def work(dev):
        if args.load:
            load(dev, data)
        return infer(dev, data, inputs, y[:args.digits], progress=_progress)

    rep = _on_device(args, work)
    _emit(args, {"image": str(args.image), "port": args.port, **rep},
          f"{rep['images']} digits: {rep['correct']} correct, {rep['bit_exact']} bit-exact "
          f"with the golden model, {rep['cycles_per_inference']} cycles per inference")
    return 0 if rep["bit_exact"] == rep["images"] else 1


def _read_bytes(path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror}") from None


def cmd_bench_tradeoff(args) -> int:
    from espalier.bench import bench_tradeoff

    checkpoint = _checkpoint_path(args)
    _load_checkpoint(checkpoint, args.model)
    rep = bench_tradeoff(args.model, lambda: _load_checkpoint(checkpoint, args.model),
                         _mnist("train"), _mnist("test"), args.scales, progress=_progress)
    if args.plot:
        from espalier.bench import DEEP_COMPRESSION
        from espalier.plots import plot_tradeoff

        plot_tradeoff({args.model: rep["points"]}, args.plot,
                      {args.model: DEEP_COMPRESSION[args.model]})
    rows = [f"{'scale':>6} {'bytes':>7} {'ratio':>7} {'error %':>8}  kept per layer"]
    for p in rep["points"]:
        rows.append(f"{p['scale']:6.2f} {p['bytes']:7d} {p['ratio']:7.1f} {p['error_pct']:8.2f}  "
                    + " ".join(f"{k:.3f}" for k in p["keep"]))
    _emit(args, rep, "\n".join(rows))
    return 0


# ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="espalier",
        description="Deep-Compression-style CNNs on open FPGAs: compress a trained model into "
                    "a weight image, inspect it, and run it through the bit-exact golden model.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, help_, func):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(func=func)
        return sp

    def json_flag(sp):
        sp.add_argument("--json", action="store_true", help="print the figures as JSON")

    sp = add("train", "Train a shipped float model on MNIST, deterministically from a seed.",
             cmd_train)
    sp.add_argument("--model", required=True, choices=MODELS, help="which network")
    sp.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sp.add_argument("--epochs", type=int, help="override the recipe's number of epochs")
    sp.add_argument("--out", help="checkpoint path (default weights/checkpoints/MODEL.pt)")
    json_flag(sp)

    sp = add("compress", "Prune, weight-share, quantize and Huffman-code a shipped model into "
                         "a weight image.", cmd_compress)
    sp.add_argument("--model", required=True, choices=MODELS, help="which network")
    sp.add_argument("--out", required=True, help="where to write the weight image")
    sp.add_argument("--checkpoint", help="float checkpoint (default weights/checkpoints/MODEL.pt)")
    sp.add_argument("--seed", type=int, default=0, help="random seed for retraining (default 0)")
    json_flag(sp)

    sp.add_argument("--plots", metavar="DIR",
                    help="also write a weight-distribution plot (MODEL-weights.png) there")

    sp = add("sensitivity", "Pruning sensitivity: error against the fraction of one layer's "
                            "weights pruned, one layer at a time, no retraining.",
             cmd_sensitivity)
    sp.add_argument("--model", required=True, choices=MODELS, help="which network")
    sp.add_argument("--checkpoint", help="float checkpoint (default weights/checkpoints/MODEL.pt)")
    sp.add_argument("--images", type=int, default=10000,
                    help="how many of the last training images to measure on (default 10000)")
    sp.add_argument("--plot", metavar="PNG", help="also draw the curves into this file")
    json_flag(sp)

    sp = add("inspect", "Per-layer sizes, sparsity and formats of a weight image.", cmd_inspect)
    sp.add_argument("image", help="weight image file")
    json_flag(sp)

    sp = add("eval", "Golden-model accuracy of a weight image on the 10,000 MNIST test images.",
             cmd_eval)
    sp.add_argument("image", help="weight image file")
    sp.add_argument("--limit", type=int, help="only the first N test images")
    json_flag(sp)

    sp = add("sim", "Run MNIST test digits through the simulated RTL (Amaranth pysim) via the "
                    "host protocol, check every layer against the golden model bit for bit, "
                    "and report cycles per layer. Exit status 1 if any layer differs.",
             cmd_sim)
    sp.add_argument("image", help="weight image file")
    sp.add_argument("--config", default="small",
                    help="hardware preset: small, icebreaker or ulx3s-85f (default small)")
    sp.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="replace a field of the preset (hw.config.AcceleratorConfig; "
                         "repeatable), e.g. serial_decoder=true")
    sp.add_argument("--images", type=int, default=1,
                    help="how many MNIST test digits, from the first (default 1)")
    sp.add_argument("--vcd", metavar="FILE", help="write the waveforms to FILE")
    json_flag(sp)

    def port_args(sp):
        sp.add_argument("--port", required=True,
                        help="serial port of the board (any pyserial URL), or sim:PRESET for "
                             "the simulated accelerator (e.g. sim:small)")
        sp.add_argument("--baud", type=int, default=115200,
                        help="baud rate (default 115200, as the board tops build)")

    sp = add("load", "Load a weight image into a board's accelerator over the host link, "
                     "after checking that it fits the board's build.", cmd_load)
    sp.add_argument("image", help="weight image file")
    port_args(sp)
    json_flag(sp)

    sp = add("infer", "Run MNIST test digits through the accelerator on a board (or the "
                      "simulated one) and check each result against the golden model. "
                      "Exit status 1 if any differs.", cmd_infer)
    sp.add_argument("image", help="the weight image the board holds (for the input format "
                                  "and the golden check)")
    port_args(sp)
    sp.add_argument("--digits", type=int, default=10,
                    help="how many MNIST test digits, from the first (default 10)")
    sp.add_argument("--load", action="store_true", help="load the image first")
    json_flag(sp)

    from espalier.build import add_parser as add_build_parser

    add_build_parser(sub)

    sp = add("bench", "Benchmarks that print figures.", None)
    bsub = sp.add_subparsers(dest="bench", required=True, metavar="BENCH")
    bp = bsub.add_parser("golden", help="golden-model throughput over the MNIST test set and "
                                        "its ratio to PyTorch's float forward, one thread each",
                         description="Golden-model throughput over the 10,000 MNIST test "
                                     "images and its ratio to PyTorch's float forward of the "
                                     "same network (decoded weights), one thread each.")
    bp.set_defaults(func=cmd_bench_golden)
    bp.add_argument("image", help="weight image file")
    bp.add_argument("--repeats", type=int, default=3, help="timed runs; the median is reported")
    json_flag(bp)
    bp = bsub.add_parser("decode", help="simulated Huffman-decode throughput of an image on a "
                                        "hardware preset (pysim)",
                         description="Simulate the preset's Huffman-decode lanes on every layer "
                                     "of a weight image and report symbols, cycles and symbols "
                                     "per cycle per lane (pysim: tens of seconds).")
    bp.set_defaults(func=cmd_bench_decode)
    bp.add_argument("image", help="weight image file")
    bp.add_argument("--config", default="small", help="hardware preset: small, icebreaker or "
                                                      "ulx3s-85f (default small)")
    bp.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="replace a field of the preset (hw.config.AcceleratorConfig; "
                         "repeatable), e.g. serial_decoder=true")
    json_flag(bp)
    bp = bsub.add_parser("tradeoff", help="compression ratio against golden-model error",
                         description="Compress a shipped model with every layer's kept fraction "
                                     "scaled, and report ratio and golden error per point "
                                     "(minutes per point for LeNet-5).")
    bp.set_defaults(func=cmd_bench_tradeoff)
    bp.add_argument("--model", required=True, choices=MODELS, help="which network")
    bp.add_argument("--scales", type=float, nargs="+", default=[0.6, 0.8, 1.0, 1.3, 1.7],
                    help="multipliers of the shipped kept fractions (default 0.6 ... 1.7)")
    bp.add_argument("--plot", metavar="PNG", help="also draw the curve into this file")
    json_flag(bp)
    return p


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: a build stops the tools it started (a kill of the
    command alone left nextpnr running), and nothing is left half-written."""


def _terminate(signum, frame):
    raise _Terminated()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    on_term = None
    if threading.current_thread() is threading.main_thread():
        on_term = signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.func(args)
    except UserError as e:
        print(f"espalier: error: {e}", file=sys.stderr)
        return 2
    except _Terminated:
        print("espalier: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("espalier: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. head: not an error of ours
        sys.stderr.close()
        return 0
    finally:
        if on_term is not None:
            signal.signal(signal.SIGTERM, on_term)


if __name__ == "__main__":
    sys.exit(main())
