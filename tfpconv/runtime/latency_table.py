"""A latency model measured through the deployed runtime: per-layer tables, interpolated and summed.

For every convolution shape of a model (input size, kernel, stride, padding) the table holds the
latency of a one-layer model over a grid of input / output channel counts and, for 3x3 layers, of
pattern connectivities (8 patterns), each timed as the deployed runtime runs it: the tfpconv
delegate where it claims the layer (its default claim policy), TFLite's XNNPACK otherwise. A 3x3
shape also has a dense twin (key suffix ``_dense``): the layer without patterns, as TFLite runs it.
A candidate's latency (channel widths per group, connectivity per convolution, ``None`` for a
convolution left dense) is predicted without building it: interpolation in the table per
convolution, summed, plus a per-model overhead measured once (everything that is not a
convolution: pooling, adds, the classifier, the interpreter).

Tables are JSON files that record the CPU model, instruction set, thread count and versions they
were measured with; :func:`LatencyTable.load` refuses a table of another machine unless forced.

For a phone the same table is made in three steps: :func:`export_table_models` writes the one-layer
models the host would time (and the full model, for the overhead) with a ``manifest.json``; the
Android demo app's latency-table mode times them there as the host does and writes
``timings.json``; :func:`table_from_device` assembles the table from it along the same code path
as :func:`measure_table`.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tfpconv._version import __version__
from tfpconv.keras import channels
from tfpconv.runtime.delegate import tuning_candidates
from tfpconv.runtime.interpreter import Interpreter
from tfpconv.runtime.layer_models import conv_model
from tfpconv.runtime.machine import TableMismatchError, cpu_microarchitecture, cpu_model
from tfpconv.runtime.timing import interleaved_latencies
from tfpconv.sparsity import patterns
from tfpconv.tflite.conversion import convert_model
from tfpconv.tflite.files import write_atomic
from tfpconv.tflite.model_file import TFLiteModel
from tfpconv.tflite.planner import embed_plan

__all__ = [
    "CONNECTIVITIES",
    "WIDTH_FRACTIONS",
    "ConvSite",
    "LatencyTable",
    "TableMismatchError",
    "conv_sites",
    "export_table_models",
    "measure_table",
    "measured_latency",
    "measured_latencies",
    "table_from_device",
]

TABLE_FORMAT = 1
#: A candidate's connectivity: one for every 3x3 convolution, or per layer name; None: dense.
Connectivity = float | Mapping[str, float | None] | None
#: Connectivities measured for pattern-prunable 3x3 convolutions (8 patterns).
CONNECTIVITIES = (0.0, 0.5, 0.72, 0.9)
#: Channel counts measured, as fractions of the layer's full width.
WIDTH_FRACTIONS = (0.25, 0.5, 0.75, 1.0)
NUM_PATTERNS = 8

#: How a model is timed, on the host and on a phone (written into the device manifest): warm-up
#: invokes per interpreter, probe runs of the first variant, time budgets for one grid point's
#: variants and for the full model, and the bounds on the number of timed runs.
WARMUP_RUNS = 2
PROBE_RUNS = 3
GRID_BUDGET_MS = 300.0
MODEL_BUDGET_MS = 1000.0
MIN_RUNS = 5
MAX_RUNS = 60

#: Files exchanged with the phone (the Android demo app's latency-table mode).
MANIFEST_FORMAT = 1
MANIFEST_KIND = "tfpconv-latency-manifest"
MANIFEST_FILE = "manifest.json"
TIMINGS_FORMAT = 1
TIMINGS_KIND = "tfpconv-latency-timings"
FULL_MODEL_FILE = "full_model.tflite"


@dataclass(frozen=True)
class ConvSite:
    """One convolution of a model, as the latency table sees it."""

    layer: str
    height: int
    width: int
    kernel: int
    stride: int
    padding: str
    in_channels: int
    out_channels: int
    #: A 3x3 convolution timed without patterns (the dense twin of a pattern site).
    dense: bool = False

    @property
    def pattern(self) -> bool:
        """A 3x3 convolution with patterns: pattern pruning applies."""
        return self.kernel == 3 and not self.dense

    @property
    def key(self) -> str:
        suffix = "_dense" if self.dense else ""
        return f"{self.height}x{self.width}_k{self.kernel}_s{self.stride}_{self.padding}{suffix}"

    def dense_twin(self) -> ConvSite:
        """The same convolution left dense (no patterns): what TFLite runs."""
        return replace(self, dense=True) if self.pattern else self


def conv_sites(model: Any) -> list[ConvSite]:
    """The plain Conv2D layers of a Keras model (static input sizes), in model order."""
    sites = []
    for layer in model.layers:
        if type(layer).__name__ != "Conv2D" or layer.get_config().get("groups", 1) != 1:
            continue
        config = layer.get_config()
        kernel, stride = config["kernel_size"], config["strides"]
        if kernel[0] != kernel[1] or stride[0] != stride[1] or config["dilation_rate"] != (1, 1):
            continue
        _, height, width, in_channels = (
            int(d) if d is not None else -1 for d in tuple(layer.input.shape)
        )
        sites.append(
            ConvSite(
                layer.name,
                height,
                width,
                int(kernel[0]),
                int(stride[0]),
                config["padding"],
                in_channels,
                int(config["filters"]),
            )
        )
    return sites


def _grid(full: int) -> list[int]:
    return sorted({max(1, math.floor(f * full + 0.5)) for f in WIDTH_FRACTIONS})


@dataclass
class ShapeGrid:
    """Milliseconds of one convolution shape: ``ms[connectivity][in][out]``."""

    in_channels: list[int]
    out_channels: list[int]
    connectivities: list[float]
    ms: list[list[list[float]]]

    def at(self, in_channels: float, out_channels: float, connectivity: float) -> float:
        """Bilinear in the channel counts, linear in connectivity (clamped to the grid)."""
        per_connectivity = []
        for plane in np.asarray(self.ms, dtype=np.float64):
            along_out = [np.interp(out_channels, self.out_channels, row) for row in plane]
            per_connectivity.append(np.interp(in_channels, self.in_channels, along_out))
        return float(np.interp(connectivity, self.connectivities, per_connectivity))


def machine_facts(threads: int) -> dict[str, Any]:
    """What a latency measured here depends on: CPU model, the instruction set the engine runs,
    threads, versions."""
    candidates = tuning_candidates((8, 8, 8), 8)
    return {
        "cpu": cpu_model(),
        "microarchitecture": cpu_microarchitecture(),
        "isa": candidates[0].isa if candidates else "unknown",
        "threads": threads,
        "tfpconv": __version__,
        "ai_edge_litert": importlib.metadata.version("ai-edge-litert"),
    }


@dataclass
class LatencyTable:
    """Per-shape grids and per-model overheads, with the machine they were measured on."""

    machine: dict[str, Any]
    shapes: dict[str, ShapeGrid] = field(default_factory=dict)
    overhead_ms: dict[str, float] = field(default_factory=dict)
    #: Per model, the factor on the summed convolution times (1 where not calibrated).
    scale: dict[str, float] = field(default_factory=dict)

    # -- prediction --------------------------------------------------------------------------

    def conv_ms(
        self, site: ConvSite, in_channels: int, out_channels: int, c: float | None
    ) -> float:
        """Predicted milliseconds of one convolution at these channel counts and connectivity
        (``None``: left dense, without patterns)."""
        if c is None:
            site = site.dense_twin()
        grid = self.shapes.get(site.key)
        if grid is None:
            raise KeyError(
                f"the table has no entry for {site.key} (layer {site.layer!r}); measure the "
                "table again with this tfpconv (`tfpconv latency-table`)"
            )
        return grid.at(in_channels, out_channels, c if site.pattern else 0.0)

    def predict(
        self,
        model: Any,
        widths: channels.Widths = 1.0,
        connectivity: Connectivity = None,
    ) -> float:
        """Predicted end-to-end milliseconds of ``model`` channel-pruned to ``widths`` (see
        :func:`tfpconv.channels.plan`) with the 3x3 convolutions pattern-pruned at
        ``connectivity``: one value for all, or per layer name; ``None`` (the default, and for
        layers a mapping does not name) leaves a convolution dense."""
        if model.name not in self.overhead_ms:
            raise KeyError(
                f"the table has no overhead for model {model.name!r}; measure it with "
                "measure_table(model)"
            )
        return self.overhead_ms[model.name] + self.scale.get(model.name, 1.0) * self.convs_ms(
            model, widths, connectivity
        )

    def convs_ms(
        self,
        model: Any,
        widths: channels.Widths = 1.0,
        connectivity: Connectivity = None,
    ) -> float:
        """The table's milliseconds of the model's convolutions, summed (no overhead, no scale)."""
        decision = channels.plan(model, widths)
        total = 0.0
        for site in conv_sites(model):
            cin = int(decision.input_keep(site.layer).sum())
            group = next(g for g in decision.groups if site.layer in g.producers)
            cout = len(decision.kept[group.name])
            c = connectivity.get(site.layer) if isinstance(connectivity, Mapping) else connectivity
            total += self.conv_ms(site, cin, cout, c)
        return total

    # -- files -------------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": TABLE_FORMAT,
                "machine": self.machine,
                "shapes": {key: asdict(grid) for key, grid in sorted(self.shapes.items())},
                "overhead_ms": self.overhead_ms,
                "scale": self.scale,
            },
            indent=1,
        )

    def save(self, path: str | Path) -> None:
        write_atomic(path, (self.to_json() + "\n").encode())

    @classmethod
    def load(
        cls, path: str | Path, threads: int | None = None, force: bool = False
    ) -> LatencyTable:
        """Read a table; unless ``force``, refuse one measured on another CPU, instruction set,
        thread count (when ``threads`` is given) or tfpconv version.

        Raises:
          FileNotFoundError; ValueError for a file that is not a table; TableMismatchError.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            table = cls(
                machine=dict(data["machine"]),
                shapes={k: ShapeGrid(**v) for k, v in data["shapes"].items()},
                overhead_ms={k: float(v) for k, v in data["overhead_ms"].items()},
                scale={k: float(v) for k, v in data.get("scale", {}).items()},
            )
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a tfpconv latency table ({err})") from None
        if not force:
            expected_threads = table.machine.get("threads", 1) if threads is None else threads
            here = machine_facts(expected_threads)
            for key in ("cpu", "isa", "threads", "tfpconv"):
                if table.machine.get(key) != here[key]:
                    raise TableMismatchError(
                        f"{path}: measured with {key} {table.machine.get(key)!r}, this machine "
                        f"has {here[key]!r}; measure a table here (`tfpconv latency-table`) or "
                        "pass force=True (--force) to use it anyway"
                    )
        return table


def _one_conv_model(site: ConvSite, in_channels: int, out_channels: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    kernel = rng.standard_normal((site.kernel, site.kernel, in_channels, out_channels))
    return conv_model(
        (site.height, site.width, in_channels),
        kernel.astype(np.float32),
        np.zeros(out_channels, np.float32),
        strides=site.stride,
        padding=site.padding,
    )


def _with_connectivity(data: bytes, connectivity: float) -> bytes:
    """The one-layer model with its filter pattern-pruned at ``connectivity`` and planned again."""
    model = TFLiteModel.from_bytes(data)
    conv = next(ref for ref in model.operators() if ref.name == "CONV_2D")
    filter_index = int(conv.op.inputs[1])
    ohwi = np.frombuffer(model.tensor_data(0, filter_index), np.float32).reshape(
        tuple(int(d) for d in model.tensor(0, filter_index).shape)
    )
    hwio = np.transpose(ohwi, (1, 2, 3, 0))
    library = patterns.select_library([hwio], NUM_PATTERNS)
    projected, _ = patterns.project(hwio, library, connectivity)
    model.set_tensor_data(0, filter_index, np.transpose(projected, (3, 0, 1, 2)).tobytes())
    planned, _ = embed_plan(model.to_bytes())
    return planned


def _time_models(models: Sequence[bytes], threads: int, runs: int) -> list[float]:
    interpreters = []
    for data in models:
        interpreter = Interpreter(model_content=data, num_threads=threads)
        interpreter.allocate_tensors()
        interpreters.append(interpreter)
    return [float(np.median(t)) for t in interleaved_latencies(interpreters, runs, WARMUP_RUNS)]


def _runs_for(ms: float, budget_ms: float = GRID_BUDGET_MS) -> int:
    return int(np.clip(budget_ms / max(ms, 1e-3), MIN_RUNS, MAX_RUNS))


def _connectivities(site: ConvSite) -> list[float]:
    return list(CONNECTIVITIES) if site.pattern else [0.0]


def _grid_variants(site: ConvSite, cin: int, cout: int, seed: int) -> list[bytes]:
    """The one-layer models of one grid point, one per connectivity of the shape."""
    dense = _one_conv_model(site, cin, cout, seed)
    return [_with_connectivity(dense, c) if site.pattern else dense for c in _connectivities(site)]


def _fill_grid(
    site: ConvSite,
    ins: Sequence[int],
    outs: Sequence[int],
    ms_of: Callable[[int, int], Sequence[float]],
) -> ShapeGrid:
    """The grid of one shape from ``ms_of(in, out)``: milliseconds per connectivity."""
    connectivities = _connectivities(site)
    ms = np.zeros((len(connectivities), len(ins), len(outs)))
    for i, cin in enumerate(ins):
        for o, cout in enumerate(outs):
            ms[:, i, o] = ms_of(cin, cout)
    return ShapeGrid(list(ins), list(outs), connectivities, ms.tolist())


def measure_grid(
    site: ConvSite, ins: Sequence[int], outs: Sequence[int], threads: int = 1, seed: int = 0
) -> ShapeGrid:
    """Time one convolution shape over a grid of channel counts (and connectivities)."""

    def ms_of(cin: int, cout: int) -> list[float]:
        variants = _grid_variants(site, cin, cout, seed)
        probe = _time_models(variants[:1], threads, PROBE_RUNS)[0]
        return _time_models(variants, threads, _runs_for(probe))

    return _fill_grid(site, ins, outs, ms_of)


def measured_latency(data: bytes, threads: int = 1, runs: int | None = None) -> float:
    """Median milliseconds of a converted model as deployed (tfpconv.Interpreter, defaults)."""
    return measured_latencies([data], threads, runs)[0]


def measured_latencies(
    models: Sequence[bytes], threads: int = 1, runs: int | None = None
) -> list[float]:
    """Median milliseconds of converted models as deployed, timed side by side: their runs
    interleaved in one loop, so that a slower spell of a shared machine slows them all alike and
    their ratios hold. ``runs`` per model (default: about a second of runs of each)."""
    if runs is not None and runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    if not models:
        return []
    probe = _time_models(models, threads, PROBE_RUNS)
    return _time_models(models, threads, runs or _runs_for(max(probe), MODEL_BUDGET_MS))


def _missing_grids(
    model: Any, table: LatencyTable
) -> dict[str, tuple[ConvSite, list[int], list[int]]]:
    """One grid per shape not yet in ``table``, over the channel counts of every layer of that
    shape (in model order)."""
    todo: dict[str, tuple[ConvSite, set[int], set[int]]] = {}
    for model_site in conv_sites(model):
        for site in dict.fromkeys((model_site, model_site.dense_twin())):
            if site.key not in table.shapes:
                _, ins, outs = todo.setdefault(site.key, (site, set(), set()))
                ins.update(_grid(site.in_channels))
                outs.update(_grid(site.out_channels))
    return {key: (site, sorted(ins), sorted(outs)) for key, (site, ins, outs) in todo.items()}


#: A calibration point: channel widths, connectivity, and the measured end-to-end milliseconds.
Calibration = tuple[channels.Widths, Connectivity, float]


def _assemble_table(
    model: Any,
    table: LatencyTable,
    grid_of: Callable[[ConvSite, list[int], list[int]], ShapeGrid],
    calibration_of: Callable[[], list[Calibration]],
    progress: Callable[[int, int, str], None] | None,
) -> LatencyTable:
    """Fill the missing shapes of ``table`` with ``grid_of``, then calibrate the model's overhead
    (and, with several points, the scale of the summed convolutions) from measured models: one
    path for tables timed here and on a phone."""
    todo = _missing_grids(model, table)
    say = progress or (lambda _done, _total, _what: None)
    for done, (key, (site, ins, outs)) in enumerate(todo.items()):
        say(done, len(todo) + 1, f"{key}: {len(ins)}x{len(outs)} channel counts")
        table.shapes[key] = grid_of(site, ins, outs)
    say(len(todo), len(todo) + 1, f"{model.name}: end to end, for the overhead")
    points = calibration_of()
    summed = np.array([table.convs_ms(model, w, c) for w, c, _ in points])
    measured = np.array([ms for _, _, ms in points])
    scale = 1.0
    if len(points) > 2 and np.ptp(summed) > 0:
        # One-layer models each pay what a whole model pays once (invoke, layout changes at
        # partition boundaries): the sum over-counts in proportion, fitted by least squares.
        scale, _ = np.polyfit(summed, measured, 1)
        scale = float(np.clip(scale, 0.2, 5.0))
    overhead = float(np.mean(measured - scale * summed))
    if overhead < 0 and float(summed @ summed) > 0:
        # Timing noise (a loaded machine, a model of microseconds) can fit a negative fixed cost,
        # which would predict negative latencies for small candidates: fit the scale alone.
        scale = float(np.clip(summed @ measured / (summed @ summed), 0.2, 5.0))
        overhead = float(np.mean(measured - scale * summed))
    table.scale[model.name] = scale
    table.overhead_ms[model.name] = max(overhead, 0.0)
    say(len(todo) + 1, len(todo) + 1, "done")
    return table


def random_candidate(
    model: Any, rng: np.random.Generator
) -> tuple[dict[str, float], dict[str, float | None]]:
    """A random candidate: a keep ratio per prunable channel group from {0.25, 0.5, 0.75, 1}, and
    per 3x3 convolution a connectivity from {dense (None), 0, 0.5, 0.72, 0.9} (the first
    convolution: dense or patterns at 0)."""
    widths = {
        g.name: float(rng.choice(WIDTH_FRACTIONS)) for g in channels.groups(model) if g.prunable
    }
    sites = [s for s in conv_sites(model) if s.pattern]
    connectivity: dict[str, float | None] = {}
    for index, site in enumerate(sites):
        choices = (None, 0.0) if index == 0 else (None, *CONNECTIVITIES)
        connectivity[site.layer] = choices[int(rng.integers(len(choices)))]
    return widths, connectivity


#: The seed of the calibration candidates (another than benchmarks/latency_model.py's).
CALIBRATION_SEED = 12345
#: Calibration candidates per model, besides the model itself.
CALIBRATION_CANDIDATES = 6


def _calibration_models(
    model: Any, count: int, seed: int = CALIBRATION_SEED
) -> list[tuple[Any, Any, bytes]]:
    """The model itself (full widths, dense) and ``count`` random candidates, converted."""
    from tfpconv.keras.candidates import build_candidate  # the keras side, for real candidates

    models: list[tuple[Any, Any, bytes]] = [(1.0, None, convert_model(model))]
    rng = np.random.default_rng(seed)
    for _ in range(count):
        widths, connectivity = random_candidate(model, rng)
        models.append(
            (widths, connectivity, convert_model(build_candidate(model, widths, connectivity)))
        )
    return models


def _host_calibration(model: Any, threads: int, count: int) -> list[Calibration]:
    return [
        (w, c, measured_latency(data, threads)) for w, c, data in _calibration_models(model, count)
    ]


def measure_table(
    model: Any,
    threads: int = 1,
    table: LatencyTable | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    calibration: int = CALIBRATION_CANDIDATES,
) -> LatencyTable:
    """Measure (or complete) the latency table of a Keras model on this machine.

    Shapes already in ``table`` are not measured again (the cache). Then the model itself and
    ``calibration`` random candidates of it (fixed seed) are built and timed end to end: a least
    squares fit of measured = overhead + scale x (summed table times) gives the model's overhead
    and scale (one-layer models each pay costs a whole model pays once). ``calibration=0`` uses
    the full model alone (scale 1).

    Args:
      model: a functional or Sequential Keras model with static input sizes.
      threads: the thread count the table is for.
      table: an existing table of this machine to extend.
      progress: called as ``progress(done, total, what)`` before each step (the CLI draws a
        progress bar with it).
    """
    table = table or LatencyTable(machine=machine_facts(threads))
    if table.machine.get("threads") != threads:
        raise TableMismatchError(
            f"the table was measured with {table.machine.get('threads')} thread(s), not {threads}"
        )
    return _assemble_table(
        model,
        table,
        lambda site, ins, outs: measure_grid(site, ins, outs, threads),
        lambda: _host_calibration(model, threads, calibration),
        progress,
    )


# -- tables measured on a phone ------------------------------------------------------------------


def _model_file_name(site: ConvSite, cin: int, cout: int, connectivity: float) -> str:
    return f"{site.key}_i{cin}_o{cout}_c{round(connectivity * 100):03d}.tflite"


def export_table_models(
    model: Any,
    out_dir: str | Path,
    threads: int = 1,
    seed: int = 0,
    progress: Callable[[int, int, str], None] | None = None,
    calibration: int = CALIBRATION_CANDIDATES,
) -> Path:
    """Write the models :func:`measure_table` would time for ``model`` into ``out_dir``, for timing
    on another device (the Android demo app's latency-table mode), and ``manifest.json``.

    Besides the grid and the full model, ``calibration`` random candidates of the model
    (``calibration_N.tflite``, the same ones :func:`measure_table` times) are exported, so that a
    table from the phone is calibrated like one measured here.

    The same grid as :func:`measure_table` (every shape, its channel counts, the connectivities of
    3x3 shapes): one .tflite per grid point and connectivity, with the same weights and tfpconv
    plan, plus the model's full conversion (``full_model.tflite``, for the overhead). The manifest
    lists them with the thread count and the timing schedule the host uses; entries of one
    ``group`` (a grid point's connectivities) are timed interleaved.

    Returns:
      The manifest's path.
    """
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be an int >= 1, got {threads!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    todo = _missing_grids(model, LatencyTable(machine={}))
    total = sum(len(ins) * len(outs) for _, ins, outs in todo.values()) + 1
    say = progress or (lambda _done, _total, _what: None)
    shapes: dict[str, Any] = {}
    entries: list[dict[str, Any]] = []
    group = 0
    for key, (site, ins, outs) in todo.items():
        shapes[key] = {
            "height": site.height,
            "width": site.width,
            "kernel": site.kernel,
            "stride": site.stride,
            "padding": site.padding,
            "in_channels": ins,
            "out_channels": outs,
            "connectivities": _connectivities(site),
        }
        for cin in ins:
            for cout in outs:
                say(group, total, f"{key}: {cin} -> {cout} channels")
                variants = _grid_variants(site, cin, cout, seed)
                for connectivity, data in zip(_connectivities(site), variants, strict=True):
                    name = _model_file_name(site, cin, cout, connectivity)
                    write_atomic(out / name, data)
                    entries.append(
                        {
                            "group": group,
                            "key": key,
                            "in_channels": cin,
                            "out_channels": cout,
                            "connectivity": connectivity,
                            "file": name,
                        }
                    )
                group += 1
    say(group, total, f"{model.name}: the full model and calibration candidates")
    (_, _, full), *candidates = _calibration_models(model, calibration)
    write_atomic(out / FULL_MODEL_FILE, full)
    calibration_entries = []
    for index, (widths, connectivity, data) in enumerate(candidates, start=1):
        name = f"calibration_{index}.tflite"
        write_atomic(out / name, data)
        calibration_entries.append({"file": name, "widths": widths, "connectivity": connectivity})
    manifest = {
        "format": MANIFEST_FORMAT,
        "kind": MANIFEST_KIND,
        "model": model.name,
        "threads": threads,
        "tfpconv": __version__,
        "schedule": {
            "warmup": WARMUP_RUNS,
            "probe_runs": PROBE_RUNS,
            "grid_budget_ms": GRID_BUDGET_MS,
            "model_budget_ms": MODEL_BUDGET_MS,
            "min_runs": MIN_RUNS,
            "max_runs": MAX_RUNS,
        },
        "shapes": shapes,
        "entries": entries,
        "full_model": {"file": FULL_MODEL_FILE},
        "calibration": calibration_entries,
    }
    path = out / MANIFEST_FILE
    write_atomic(path, (json.dumps(manifest, indent=1) + "\n").encode())
    say(total, total, "done")
    return path


def _read_json(path: Path, kind: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a {what} ({err})") from None
    if not isinstance(data, dict) or data.get("kind") != kind:
        raise ValueError(f'{path}: not a {what} (no "kind": "{kind}")')
    return data


def _device_machine(reported: Mapping[str, Any], threads: int, version: str) -> dict[str, Any]:
    """The table's machine: what the phone reported, with the keys LatencyTable.load compares."""
    machine = dict(reported)
    for key in ("cpu", "isa"):
        if not isinstance(machine.get(key), str) or not machine[key]:
            raise ValueError(f"the device timings have no machine {key!r}")
    if machine.setdefault("threads", threads) != threads:
        raise ValueError(
            f"the device timed with {machine['threads']} thread(s), the manifest says {threads}"
        )
    machine.setdefault("tfpconv", version)
    return machine


def table_from_device(
    manifest: str | Path,
    timings: str | Path,
    model: Any,
    progress: Callable[[int, int, str], None] | None = None,
) -> LatencyTable:
    """The latency table of ``model`` from a phone's timings of :func:`export_table_models`' files.

    Args:
      manifest: the exported folder or its ``manifest.json``.
      timings: the ``timings.json`` the Android demo app wrote.
      model: the Keras model the files were exported for.

    The grids and the overhead are assembled as :func:`measure_table` assembles what it times here;
    the table's machine is what the phone reported (CPU / SoC, ISA, threads, app and tfpconv
    versions), so :meth:`LatencyTable.load` on another machine needs ``force=True``.

    Raises:
      FileNotFoundError; ValueError for files that are not a manifest / timings of this model, or
      timings that miss an entry.
    """
    manifest_path = Path(manifest)
    if manifest_path.is_dir():
        manifest_path = manifest_path / MANIFEST_FILE
    spec = _read_json(manifest_path, MANIFEST_KIND, "tfpconv latency manifest")
    timed = _read_json(Path(timings), TIMINGS_KIND, "tfpconv device timings file")
    if spec.get("format") != MANIFEST_FORMAT or timed.get("format") != TIMINGS_FORMAT:
        raise ValueError(
            f"unsupported formats: manifest {spec.get('format')}, timings {timed.get('format')}"
        )
    for data, path in ((spec, manifest_path), (timed, Path(timings))):
        if data.get("model") != model.name:
            raise ValueError(f"{path} is for model {data.get('model')!r}, not {model.name!r}")
    threads = int(spec["threads"])
    machine = _device_machine(timed.get("machine") or {}, threads, spec.get("tfpconv", ""))
    by_file = {str(e["file"]): e for e in timed.get("entries", []) if isinstance(e, Mapping)}
    ms: dict[tuple[str, int, int, float], float] = {}
    for entry in spec["entries"]:
        got = by_file.get(entry["file"])
        if got is None:
            raise ValueError(f"{timings}: no timing of {entry['file']}")
        value = float(got["median_ms"])
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{timings}: bad median_ms {value} for {entry['file']}")
        point = (entry["key"], int(entry["in_channels"]), int(entry["out_channels"]))
        if (got.get("key"), got.get("in_channels"), got.get("out_channels")) != point:
            raise ValueError(f"{timings}: {entry['file']} is not the manifest's {point}")
        ms[(*point, float(entry["connectivity"]))] = value
    full = (timed.get("full_model") or {}).get("median_ms")
    if full is None or not math.isfinite(float(full)) or float(full) <= 0:
        raise ValueError(f"{timings}: no timing of the full model")
    points: list[Calibration] = [(1.0, None, float(full))]
    timed_calibration = {
        str(t.get("file")): t.get("median_ms")
        for t in timed.get("calibration", [])
        if isinstance(t, Mapping)
    }
    for candidate in spec.get("calibration", []):
        value = timed_calibration.get(candidate["file"])
        if value is None:
            raise ValueError(f"{timings}: no timing of calibration model {candidate['file']}")
        if not math.isfinite(float(value)) or float(value) <= 0:
            raise ValueError(f"{timings}: bad median_ms {value} for {candidate['file']}")
        points.append((candidate["widths"], candidate["connectivity"], float(value)))

    def grid_of(site: ConvSite, ins: list[int], outs: list[int]) -> ShapeGrid:
        exported = spec["shapes"].get(site.key)
        if exported is None or (exported["in_channels"], exported["out_channels"]) != (ins, outs):
            raise ValueError(
                f"{manifest_path}: exported for another model (shape {site.key} differs); "
                "export it again with export_table_models"
            )
        return _fill_grid(
            site,
            ins,
            outs,
            lambda cin, cout: [ms[(site.key, cin, cout, c)] for c in _connectivities(site)],
        )

    table = LatencyTable(machine=machine)
    return _assemble_table(model, table, grid_of, lambda: points, progress)
