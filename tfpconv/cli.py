"""The ``tfpconv`` command.

Subcommands:

* ``tfpconv convert MODEL -o OUT.tflite`` -- Keras / SavedModel / .tflite to .tflite + plan;
* ``tfpconv inspect OUT.tflite [--json] [-v]`` -- per-layer report of a converted model;
* ``tfpconv bench OUT.tflite [--threads 1,2] [--runs N]`` -- XNNPACK vs the delegate, side by side.

Each subcommand is a :class:`Command` in :data:`COMMANDS` (its arguments and its handler), so a new
one (e.g. ``bench``) is added by writing two functions and one entry. User errors (missing file,
not a model, corrupt file, no convolutions, no plan) print one line ``tfpconv: error: ...`` and
exit with status 1; argument errors exit with status 2.
"""

from __future__ import annotations

import os

# TensorFlow reads this when it is first imported: keep its C++ logging (down to the errors,
# such as "failed call to cuInit" on a machine without a GPU) off the user's screen.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from tfpconv.sparsity.patterns import format_mask  # noqa: E402

__all__ = ["COMMANDS", "Command", "build_parser", "main"]

EXIT_OK = 0
EXIT_ERROR = 1


@dataclass(frozen=True)
class Command:
    """A subcommand: name, one-line help, argument set-up, and handler (returns the exit code)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _user_errors() -> tuple[type[BaseException], ...]:
    from tfpconv.runtime.machine import TableMismatchError
    from tfpconv.tflite.errors import ConversionError
    from tfpconv.tflite.model_file import TFLiteModelError
    from tfpconv.tflite.plan import PlanError

    return (ConversionError, PlanError, TFLiteModelError, TableMismatchError, OSError)


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with the process's stderr (file descriptor 2) sent to /dev/null.

    While loading, TF's C++ runtime writes absl and CUDA lines to fd 2 whatever
    TF_CPP_MIN_LOG_LEVEL says. Only the command does this, never the library: the command owns
    the process, so nothing else of the user's is writing to stderr meanwhile.
    """
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        import tensorflow  # noqa: F401
    finally:
        sys.stderr.flush()
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)


def _error_text(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename is not None:
        return f"{err.filename}: {err.strerror or err}"
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


# -- convert -----------------------------------------------------------------------------------


def _convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a .keras/.h5 file, a SavedModel directory or a .tflite file")
    parser.add_argument("-o", "--output", required=True, help="the .tflite file to write")
    parser.add_argument(
        "--filter-group-size",
        type=int,
        default=None,
        metavar="N",
        help="nominal filters per group of the filter kernel reorder (default 16)",
    )
    parser.add_argument(
        "--tune",
        action="store_true",
        help="time the delegate's kernel variants per layer on this machine and record the "
        "fastest in the plan (a few seconds per layer)",
    )
    parser.add_argument(
        "--tune-threads",
        type=_positive_int,
        default=1,
        metavar="N",
        help="threads to tune for (default 1)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")


def _converts_with_tensorflow(model: str) -> bool:
    """Whether converting ``model`` goes through TensorFlow (a Keras file or a SavedModel)."""
    from tfpconv.tflite.frontend import KERAS_SUFFIXES

    path = Path(model)
    if path.is_dir():
        return (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists()
    return path.is_file() and path.stat().st_size > 0 and path.suffix.lower() in KERAS_SUFFIXES


def _run_convert(args: argparse.Namespace) -> int:
    from tfpconv.api import convert
    from tfpconv.tflite.files import check_output_path
    from tfpconv.tflite.plan import read_plan

    options: dict[str, Any] = {}
    if args.filter_group_size is not None:
        options["filter_group_size"] = args.filter_group_size
    check_output_path(args.output)  # before TensorFlow's import and conversion take seconds
    if args.tune or _converts_with_tensorflow(args.model):
        _import_tensorflow_quietly()
    data = convert(
        args.model, args.output, tune=args.tune, tune_threads=args.tune_threads, **options
    )
    if not args.quiet:
        plan = read_plan(data)
        print(f"wrote {args.output} ({len(data):,} bytes): {_planned_counts(plan)}")
        for op in plan.skipped:
            print(
                f"  skipped operator {op.operator_index} (subgraph {op.subgraph_index}): "
                f"{op.reason}"
            )
    return EXIT_OK


def _planned_counts(plan: Any) -> str:
    """ "2 of 3 CONV_2D planned[ (1 with an activation mask)][, 1 of 2 FULLY_CONNECTED
    planned]"."""
    unified_convs = sum(op.conv1x1 for op in plan.unified_fcs)
    unified_fcs = len(plan.unified_fcs) - unified_convs
    skipped = [op.op_name for op in plan.skipped]
    convs = len(plan.convs) + unified_convs + len(plan.dense_convs)
    text = f"{convs} of {convs + skipped.count('CONV_2D')} CONV_2D planned"
    masked = len(plan.dense_convs) + sum(op.activation_mask is not None for op in plan.convs)
    if masked:
        text += f" ({masked} with an activation mask)"
    fcs = unified_fcs + skipped.count("FULLY_CONNECTED")
    if fcs:
        text += f", {unified_fcs} of {fcs} FULLY_CONNECTED planned (unified weights)"
    return text


# -- inspect -----------------------------------------------------------------------------------


def _inspect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a .tflite file written by `tfpconv convert`")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also draw every layer's pattern library"
    )


def _count(value: int) -> str:
    for unit, size in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return str(value)


def _kept(kept: int, total: int) -> str:
    share = 100.0 * kept / total if total else 0.0
    return f"{_count(kept)}/{_count(total)} ({share:.0f}%)"


def _short_name(name: str) -> str:
    """``model/layer/Op`` tensor names -> ``layer`` (the full name is in ``--json``)."""
    parts = [part for part in name.split("/") if part]
    return parts[-2] if len(parts) >= 2 else name


def _compression(weights: int, kept: int) -> str:
    return f"{weights / kept:.2f}x" if kept else "all pruned"


def _run_inspect(args: argparse.Namespace) -> int:
    from tfpconv.tflite.inspect import inspect_model

    report = inspect_model(args.model)
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK

    from rich.console import Console
    from rich.table import Table

    # Piped output keeps wide rows unless COLUMNS says otherwise.
    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    console = Console(width=200) if wide else Console()
    totals = report.totals()
    console.print(
        f"[bold]{report.source}[/bold]: plan by {report.producer or 'unknown'} "
        f"(schema {report.schema_version}); {totals['planned']} of {totals['convs']} CONV_2D "
        f"planned; metadata: {', '.join(report.metadata)}",
        highlight=False,
    )
    table = Table(show_footer=True, highlight=False)
    table.add_column("op", justify="right", footer="")
    table.add_column("layer", footer="total", overflow="fold")
    table.add_column("filter OxHxWxI", footer="")
    table.add_column("out HxW /s", footer="")
    table.add_column("plan", footer=f"{totals['planned']}/{totals['convs']} planned")
    table.add_column("patterns (kernels per pattern)", footer="")
    table.add_column(
        "kernels kept", justify="right", footer=_kept(totals["kernels_kept"], totals["kernels"])
    )
    table.add_column(
        "weights kept", justify="right", footer=_kept(totals["weights_kept"], totals["weights"])
    )
    table.add_column(
        "FLOPs kept", justify="right", footer=_kept(totals["flops_kept"], totals["flops"])
    )
    table.add_column(
        "compression",
        justify="right",
        footer=_compression(totals["weights"], totals["weights_kept"]),
    )
    for layer in report.layers:
        out = layer.output_shape
        spatial = f"{out[1]}x{out[2]}" if len(out) == 4 else "?"
        counts = list(layer.pattern_histogram.values())
        histogram = (
            f"K={len(counts)}: " + " ".join(str(c) for c in counts)
            if counts
            else ("-" if not layer.planned else "none (all pruned)")
        )
        table.add_row(
            str(layer.operator_index)
            if layer.subgraph_index == 0
            else f"{layer.subgraph_index}:{layer.operator_index}",
            _short_name(layer.name),
            "x".join(str(d) for d in layer.kernel_shape),
            f"{spatial} /{layer.strides[0]}",
            _plan_cell(layer),
            histogram,
            _kept(layer.kernels_kept, layer.kernels),
            _kept(layer.weights_kept, layer.weights),
            _kept(layer.flops_kept, layer.flops),
            _compression(layer.weights, layer.weights_kept),
        )
    console.print(table)
    console.print(report.size_table(), highlight=False)
    if args.verbose:
        for layer in report.layers:
            if not layer.planned or not layer.pattern_histogram:
                continue
            console.print(
                f"op {layer.operator_index} ({_short_name(layer.name)}) pattern library:",
                highlight=False,
            )
            for mask, count in layer.pattern_histogram.items():
                console.print(f"  {format_mask(mask)}  {count}", highlight=False)
    return EXIT_OK


def _plan_cell(layer: Any) -> str:
    if not layer.planned:
        return f"[yellow]{layer.reason}[/yellow]"
    mask = f", mask {layer.activation_masked:.0%} zero" if layer.activation_masked else ""
    if layer.kind == "unified_fc":
        return f"[green]planned[/green], unified blocks of {layer.block_size}"
    if layer.kind == "dense_conv":
        return f"[green]planned[/green], dense{mask}"
    return f"[green]planned[/green], {layer.groups} group{'s' if layer.groups > 1 else ''}{mask}"


# -- bench -------------------------------------------------------------------------------------


def _thread_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected thread counts like 1,2; got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"thread counts must be >= 1; got {text!r}")
    return counts


def _bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a .tflite file written by `tfpconv convert`")
    parser.add_argument(
        "--threads",
        type=_thread_counts,
        default=[1],
        metavar="N[,N...]",
        help="thread counts to measure, for both paths (default 1)",
    )
    parser.add_argument(
        "--runs", type=_positive_int, default=10, help="timed runs per configuration (default 10)"
    )
    parser.add_argument("--no-layers", action="store_true", help="skip the per-layer timing")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="also measure peak memory of each path (fresh processes)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")


def _run_bench(args: argparse.Namespace) -> int:
    from rich.console import Console

    from tfpconv.runtime.bench import bench
    from tfpconv.tflite.plan import read_plan

    if not args.no_layers:  # per-layer timing re-builds every layer in Keras
        read_plan(args.model)  # a bad file fails now, not after TensorFlow's import
        _import_tensorflow_quietly()
    console = Console(stderr=True)
    with console.status("benchmarking") as status:
        report = bench(
            args.model,
            threads=args.threads,
            runs=args.runs,
            layers=not args.no_layers,
            memory=args.memory,
            progress=lambda message: status.update(message),
        )
    print(report.markdown())
    if args.json:
        from tfpconv.tflite.files import write_atomic

        write_atomic(args.json, (json.dumps(report.to_dict(), indent=2) + "\n").encode())
    return EXIT_OK


# -- latency-table -----------------------------------------------------------------------------


def _latency_table_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a Keras model file (.keras, .h5) with static input sizes")
    parser.add_argument(
        "-o", "--output", help="the table (JSON) to write (not with --export-models)"
    )
    parser.add_argument(
        "--threads", type=_positive_int, default=1, help="thread count to measure (default 1)"
    )
    parser.add_argument(
        "--extend",
        action="store_true",
        help="keep the shapes already in OUTPUT (measured on this machine) and add the missing",
    )
    phone = parser.add_argument_group(
        "tables for a phone (the Android demo app's latency-table mode; see android_demo/README.md)"
    )
    phone.add_argument(
        "--export-models",
        metavar="DIR",
        help="write the one-layer models, the full model and manifest.json to DIR instead of "
        "measuring",
    )
    phone.add_argument(
        "--from-device",
        metavar="TIMINGS",
        help="assemble the table from the timings.json the app wrote (needs --manifest)",
    )
    phone.add_argument(
        "--manifest", metavar="DIR", help="the folder (or manifest.json) --export-models wrote"
    )


def _latency_table_mode(args: argparse.Namespace) -> str:
    """'export', 'device' or 'measure'; argument combinations that make no sense are errors."""
    if args.export_models and args.from_device:
        raise _LatencyTableUsage("--export-models and --from-device exclude each other")
    if args.export_models:
        if args.output or args.extend:
            raise _LatencyTableUsage("--export-models writes no table: drop -o / --extend")
        return "export"
    if not args.output:
        raise _LatencyTableUsage("the table to write is missing: -o TABLE.json")
    if args.from_device:
        if not args.manifest:
            raise _LatencyTableUsage("--from-device needs --manifest DIR (the exported folder)")
        if args.extend:
            raise _LatencyTableUsage("--extend is for tables measured here, not --from-device")
        return "device"
    if args.manifest:
        raise _LatencyTableUsage("--manifest goes with --from-device")
    return "measure"


class _LatencyTableUsage(Exception):
    pass


def _run_latency_table(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from tfpconv.tflite.files import check_output_path

    try:
        mode = _latency_table_mode(args)
    except _LatencyTableUsage as err:
        print(f"tfpconv latency-table: error: {err}", file=sys.stderr)
        return 2
    if mode != "export":
        check_output_path(args.output)
    _import_tensorflow_quietly()
    from tfpconv.runtime.latency_table import (
        LatencyTable,
        export_table_models,
        measure_table,
        table_from_device,
    )
    from tfpconv.tflite.frontend import load_keras_file

    model = load_keras_file(Path(args.model), None)
    table = None
    if args.extend and Path(args.output).exists():
        table = LatencyTable.load(args.output, threads=args.threads)
    with Progress(transient=True) as bar:
        task = bar.add_task("measuring", total=None)

        def progress(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=what)

        if mode == "export":
            manifest = export_table_models(
                model, args.export_models, threads=args.threads, progress=progress
            )
        elif mode == "device":
            try:
                table = table_from_device(args.manifest, args.from_device, model, progress)
            except ValueError as err:
                print(f"tfpconv: error: {_error_text(err)}", file=sys.stderr)
                return EXIT_ERROR
        else:
            table = measure_table(model, threads=args.threads, table=table, progress=progress)
    if mode == "export":
        entries = json.loads(manifest.read_text())["entries"]
        print(
            f"wrote {manifest}: {len(entries)} one-layer models and the full model of "
            f"{model.name!r} for {args.threads} thread(s); time them on the phone "
            "(android_demo/README.md), then --from-device"
        )
        return EXIT_OK
    table.save(args.output)
    twins = sum(key.endswith("_dense") for key in table.shapes)
    print(
        f"wrote {args.output}: {len(table.shapes) - twins} convolution shapes ({twins} of them "
        f"3x3, also timed without patterns), overhead of "
        f"{model.name!r} {table.overhead_ms[model.name]:.3f} ms ({table.machine['cpu']}, "
        f"{table.machine['isa']}, {table.machine['threads']} thread(s))"
    )
    return EXIT_OK


# -- search --------------------------------------------------------------------------------------


def _search_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="the trained Keras model file (.keras, .h5)")
    parser.add_argument("--table", required=True, help="its latency table (tfpconv latency-table)")
    parser.add_argument(
        "--data",
        default="fashion-mnist",
        help="training data: 'fashion-mnist' or an .npz with arrays x and y (a validation split "
        "is held out of it; the test set is never used)",
    )
    parser.add_argument(
        "--images", type=_positive_int, default=None, help="use only the first N images"
    )
    parser.add_argument("--trials", type=_positive_int, default=60, help="candidates in all")
    parser.add_argument(
        "--anchors-ms", type=float, nargs="+", help="latency targets (default: three, spread)"
    )
    parser.add_argument(
        "--storage",
        default=None,
        help="optuna storage: a journal file (default OUTPUT/search.journal) or a database URL "
        "(postgresql://user@host/db) shared by workers",
    )
    parser.add_argument("--study", default=None, help="study name (default jcw-MODELNAME)")
    parser.add_argument(
        "--worker",
        action="store_true",
        help="only evaluate candidates for the study in --storage (start any number of these)",
    )
    parser.add_argument(
        "--finetune-steps", type=int, default=100, help="fine-tuning steps per candidate"
    )
    parser.add_argument("--population", type=_positive_int, default=12, help="NSGA-II population")
    parser.add_argument("-o", "--output", default="search", help="folder for the front files")
    parser.add_argument(
        "--force-table", action="store_true", help="use a table measured on another machine"
    )


def _search_data(spec: str, images: int | None) -> tuple[Any, Any]:
    import numpy as np

    from tfpconv.data.datasets import fashion_mnist

    if spec == "fashion-mnist":
        (x, y), _ = fashion_mnist()
    else:
        try:
            with np.load(spec) as arrays:
                x, y = arrays["x"], arrays["y"]
        except (OSError, KeyError, ValueError) as err:
            raise ValueError(f"{spec}: not an .npz with arrays x and y ({err})") from None
    return (x[:images], y[:images]) if images else (x, y)


def _run_search(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    _import_tensorflow_quietly()
    import tfpconv.search as search
    from tfpconv.runtime.latency_table import LatencyTable
    from tfpconv.tflite.frontend import load_keras_file

    model = load_keras_file(Path(args.model), None)
    try:
        table = LatencyTable.load(args.table, force=args.force_table)
        x, y = _search_data(args.data, args.images)
    except ValueError as err:
        print(f"tfpconv search: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    output = Path(args.output)
    storage = args.storage or str(output / "search.journal")
    estimator = search.AccuracyEstimator(model, x, y, finetune_steps=args.finetune_steps)
    with Progress() as bar:
        task = bar.add_task("searching", total=args.trials)
        front = search.search(
            model, x, y, table, args.trials, anchors_ms=args.anchors_ms, storage=storage,
            study_name=args.study, population_size=args.population, worker=args.worker,
            estimator=estimator, threads=table.machine.get("threads", 1),
            progress=lambda done, total: bar.update(task, completed=done),
        )  # fmt: skip
    if front is None:
        print(f"worker done: the study in {storage} holds {args.trials} candidates")
        return EXIT_OK
    output.mkdir(parents=True, exist_ok=True)
    front.save(output / "front.json")
    (output / "front.md").write_text(front.markdown() + "\n")
    front.plot(output / "front.png", title=f"tfpconv search: {model.name}")
    print(front.markdown())
    print(f"wrote {output}/front.json, front.md and front.png ({len(front.entries)} candidates)")
    return EXIT_OK


#: The subcommands, in help order. Add new ones here.
COMMANDS: list[Command] = [
    Command(
        "convert",
        "convert a Keras model (or .tflite) to a .tflite carrying the tfpconv plan",
        _convert_arguments,
        _run_convert,
    ),
    Command(
        "inspect",
        "show per layer what the tfpconv plan of a converted model covers",
        _inspect_arguments,
        _run_inspect,
    ),
    Command(
        "bench",
        "time a converted model with TFLite's XNNPACK and with the tfpconv delegate",
        _bench_arguments,
        _run_bench,
    ),
    Command(
        "latency-table",
        "measure the per-layer latency table of a Keras model on this machine (for the search)",
        _latency_table_arguments,
        _run_latency_table,
    ),
    Command(
        "search",
        "search per-layer channel widths and connectivities for several latency budgets (JCW)",
        _search_arguments,
        _run_search,
    ),
]


def build_parser(commands: Sequence[Command] = COMMANDS) -> argparse.ArgumentParser:
    """The argument parser with one subparser per command."""
    from tfpconv._version import __version__

    parser = argparse.ArgumentParser(
        prog="tfpconv",
        description="PCONV pattern-pruned CNNs on TensorFlow Lite.",
    )
    parser.add_argument("--version", action="version", version=f"tfpconv {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in commands:
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


def _show_library_log() -> None:
    """Show the library's "tfpconv" logger (tuning progress, ...) on stderr, and nothing else's."""
    logger = logging.getLogger("tfpconv")
    if not any(getattr(h, "tfpconv_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.tfpconv_cli = True
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tfpconv`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    _show_library_log()
    try:
        return args.run(args)
    except _user_errors() as err:
        print(f"tfpconv: error: {_error_text(err)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("tfpconv: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
