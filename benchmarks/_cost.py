"""What a compiled XLA program costs, device-independently: bytes, flops, kernels, FFTs, top consumers.

:func:`analyse` takes a ``jax.stages.Compiled`` (``jax.jit(f).lower(...).compile()``) and reads two things:

- ``compiled.cost_analysis()``: XLA's own ``bytes accessed`` and ``flops`` of the program. XLA's
  convention: a ``conditional`` costs its costliest branch, a ``while`` loop one iteration of its body.
- the optimized HLO, ``compiled.as_text()``, parsed here (:func:`parse_hlo`). What is counted:

  * **kernels**: the instructions of the *top-level* computations (the entry, ``while`` bodies and
    conditions, ``conditional`` branches, ``call`` targets; not the bodies of fusions or reducers)
    that run as a loop nest or library call of their own: every instruction except ``parameter``,
    ``constant``, ``get-tuple-element``, ``tuple``, ``bitcast``, dependency markers and the control
    flow itself. Each one is a kernel launch on a GPU (XLA:CPU runs them as one loop nest each).
  * **fusions**: those kernels that are ``fusion`` instructions.
  * **FFTs**: every ``fft`` instruction of the module, fused or not, each once.
  * **bytes per kernel**, estimated by ``HloCostAnalysis``'s own rules (:func:`instruction_bytes`):
    operand bytes plus result bytes; for a fusion, per parameter what its fused users read (a slice
    its result, a broadcast or reshape all of it each, other users all of it once) plus the result.
    Summed in XLA's convention (costliest branch, one loop iteration) it is ``estimated_bytes``,
    which matches ``bytes accessed`` to 10⁻⁵ on the budget's steps (``estimate_vs_xla``).

  Each figure is given for the whole *program* (every branch of a conditional counted, each loop
  body once) and for the **common path**: every conditional at its *cheapest* branch — for the
  stepper that is the step without sub-cycling (``Subcycle``'s sub-stepped branch runs only where the
  positivity limit has fallen below ``dt``).

The top consumers (kernels of the common path by estimated bytes) carry their ``op_name``
and the source lines of this repository that made them (a fusion: those of its root
instruction, as XLA names it): the innermost frame outside
site-packages of the instruction's stack (``stack_frame_id`` into the module's ``StackFrames``
table, or ``source_file``/``source_line`` in older HLO), and for a fusion the lines its fused
instructions come from, most frequent first. ``by_function`` sums the common path's bytes per
function of this repository (inclusive and exclusive, as a profiler does).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FREE = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all", "add-dependency",
        "opt-barrier", "partition-id", "replica-id", "domain"}  # fmt: skip
CONTROL = {"while", "conditional", "call", "async-start", "async-done", "async-update"}
ITEMSIZE = {"pred": 1, "s4": 1, "u4": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "s16": 2, "u16": 2,
            "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8,
            "c128": 16, "token": 0}  # fmt: skip
_ARRAY = re.compile(r"\b([a-z]+[0-9a-z]*)\[([0-9,]*)\]")
_NAME = re.compile(r"%([\w.\-]+)")
_INSTRUCTION = re.compile(r"^\s+(ROOT )?%([\w.\-]+) = (.*)$")


def type_bytes(text: str) -> int:
    """Bytes of an HLO type: an array ``f32[256,256]{1,0}`` or a tuple of them (summed)."""
    total = 0
    for dtype, dims in _ARRAY.findall(text):
        n = 1
        for d in filter(None, dims.split(",")):
            n *= int(d)
        total += ITEMSIZE.get(dtype, 0) * n
    return total


def _closing(text: str, start: int) -> int:
    """Index just past the bracket that closes the one at ``text[start]``."""
    depth, pairs = 0, {"(": ")", "{": "}", "[": "]"}
    for i in range(start, len(text)):
        c = text[i]
        if c in pairs:
            depth += 1
        elif c in pairs.values():
            depth -= 1
            if depth == 0:
                return i + 1
    return len(text)


@dataclass
class Instruction:
    name: str
    opcode: str
    bytes_out: int
    operands: list[str]
    operand_text: str
    attributes: str

    def called(self, key: str) -> list[str]:
        """Computations named by attribute ``key`` (``calls``, ``body``, ``branch_computations`` …)."""
        match = re.search(rf"\b{key}=(\{{[^}}]*\}}|%[\w.\-]+)", self.attributes)
        return _NAME.findall(match.group(1)) if match else []

    def metadata(self, key: str) -> str | None:
        match = re.search(rf'\b{key}=("(?:[^"\\]|\\.)*"|\d+)', self.attributes)
        return match.group(1).strip('"') if match else None


@dataclass
class Computation:
    name: str
    instructions: list[Instruction] = field(default_factory=list)
    root: Instruction | None = None

    def shapes(self) -> dict[str, int]:
        return {i.name: i.bytes_out for i in self.instructions}


@dataclass
class Module:
    computations: dict[str, Computation]
    entry: str
    frames: dict[int, tuple[str, int, str, int]]  # frame id → (file, line, function, parent id; 0: none)

    def source(self, instruction: Instruction, root: Path = ROOT) -> list[str]:
        """This repository's frames of ``instruction``'s stack, innermost first (``file:line function``)."""
        if instruction.metadata("source_file"):  # older HLO: the innermost frame only
            path, line = instruction.metadata("source_file"), instruction.metadata("source_line")
            return [f"{_relative(path, root)}:{line} ?"]
        frame, out, seen = int(instruction.metadata("stack_frame_id") or 0), [], set()
        while frame in self.frames and frame not in seen:
            seen.add(frame)
            path, line, function, parent = self.frames[frame]
            if not _external(path):
                out.append(f"{_relative(path, root)}:{line} {function}")
            frame = parent
        return out


def _external(path: str) -> bool:
    return any(part in path for part in ("site-packages", "dist-packages", "/lib/python")) or path.startswith("<")


@functools.lru_cache(maxsize=4096)
def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return path


def _frames(lines: list[str]) -> dict[int, tuple[str, int, str, int]]:
    """The ``FileNames``/``FunctionNames``/``FileLocations``/``StackFrames`` tables of the HLO text."""
    tables: dict[str, dict[int, str]] = {}
    current = None
    for line in lines:
        if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            current = tables.setdefault(line, {})
        elif current is not None and re.match(r"^\d+ ", line):
            key, value = line.split(" ", 1)
            current[int(key)] = value
        elif line.startswith(("%", "ENTRY")):
            break
    files = {k: v.strip('"') for k, v in tables.get("FileNames", {}).items()}
    functions = {k: v.strip('"') for k, v in tables.get("FunctionNames", {}).items()}

    def numbers(text):
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", text)}

    locations = {k: numbers(v) for k, v in tables.get("FileLocations", {}).items()}
    stack = {k: numbers(v) for k, v in tables.get("StackFrames", {}).items()}
    # the text prints parent_frame_id one above the parent's id (0: no parent), so a root frame reads
    # as its own parent; where no frame does, the ids are taken as printed
    offset = 1 if any(v.get("parent_frame_id") == k for k, v in stack.items()) else 0
    out = {}
    for k, v in stack.items():
        loc = locations.get(v.get("file_location_id", 0), {})
        parent = v.get("parent_frame_id", 0) - offset
        out[k] = (files.get(loc.get("file_name_id"), "?"), loc.get("line", 0),
                  functions.get(loc.get("function_name_id"), "?"), parent if parent != k else 0)  # fmt: skip
    return out


def parse_hlo(text: str) -> Module:
    """The computations of optimized HLO text (``compiled.as_text()``), with their instructions' result
    bytes, operand names and attributes, and the module's stack-frame table."""
    lines = text.splitlines()
    computations, entry, current = {}, None, None
    for line in lines:
        if line.startswith(("%", "ENTRY %")) and line.rstrip().endswith("{"):
            name = line.split()[1 if line.startswith("ENTRY") else 0].lstrip("%")
            current = computations[name] = Computation(name)
            entry = name if line.startswith("ENTRY") else entry
            continue
        if current is None:
            continue
        if line.startswith("}"):
            current = None
            continue
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        is_root, name, rest = match.groups()
        end = _closing(rest, 0) if rest.startswith("(") else rest.index(" ")
        type_text, rest = rest[:end], rest[end:].lstrip()
        opcode = rest[: rest.index("(")]
        close = _closing(rest, len(opcode))
        operands = _NAME.findall(rest[len(opcode) : close])
        instruction = Instruction(
            name, opcode, type_bytes(type_text), operands, rest[len(opcode) + 1 : close - 1], rest[close:]
        )
        current.instructions.append(instruction)
        current.root = instruction if is_root else current.root
    if entry is None:
        raise ValueError("no ENTRY computation in the HLO text")
    return Module(computations, entry, _frames(lines))


def _parameter_read_bytes(name: str, size: int, users: list[Instruction]) -> int:
    """Bytes a fusion reads of its parameter ``name`` (``size`` bytes), by XLA's rule
    (``HloCostAnalysis::FusionParameterReadBytes``): a slice reads its result; a dynamic slice of it
    its result; a dynamic update slice into it nothing (aliased); a broadcast or reshape all of it,
    each; any other users all of it once together."""
    total, shared = 0, False
    for user in users:
        first = user.operands[0] == name
        if user.opcode == "slice" or (user.opcode == "dynamic-slice" and first):
            total += user.bytes_out
        elif user.opcode == "dynamic-update-slice" and first:
            continue
        elif user.opcode in ("broadcast", "reshape"):
            total += size
        elif not shared:
            shared, total = True, total + size
    return total


def instruction_bytes(module: Module, computation: Computation, instruction: Instruction) -> int:
    """Bytes an instruction moves, estimated as ``HloCostAnalysis`` counts them: operands + result;
    for a fusion, what it reads of each parameter (:func:`_parameter_read_bytes`) + its result (the
    update only, where the root is a dynamic update slice)."""
    shapes = computation.shapes()
    reads = [shapes.get(name, 0) for name in instruction.operands]
    called = instruction.called("calls") if instruction.opcode == "fusion" else []
    fused = module.computations.get(called[0]) if called else None
    if fused is None:
        return sum(reads) + instruction.bytes_out
    number = {i.name: int(i.operand_text) for i in fused.instructions if i.opcode == "parameter"}
    users: dict[str, list[Instruction]] = {name: [] for name in number}
    for i in fused.instructions:
        for name in dict.fromkeys(i.operands):
            if name in users:
                users[name].append(i)
    read = sum(_parameter_read_bytes(name, reads[k], users[name]) for name, k in number.items() if k < len(reads))
    root, inner = fused.root, fused.shapes()
    written = inner.get(root.operands[1], 0) if root is not None and root.opcode == "dynamic-update-slice" else None
    return read + (instruction.bytes_out if written is None else written)


@dataclass
class Tally:
    """What a walk over the top-level computations found: estimated bytes, kernels, fusions, FFTs, and
    every kernel as ``(bytes, computation, instruction, region)``."""

    bytes: int = 0
    kernels: int = 0
    fusions: int = 0
    ffts: int = 0
    items: list = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.bytes += other.bytes
        self.kernels += other.kernels
        self.fusions += other.fusions
        self.ffts += other.ffts
        self.items += other.items


def _ffts_in(module: Module, name: str, seen: set | None = None) -> int:
    """FFT instructions in computation ``name`` and the computations it calls (each computation once)."""
    seen = set() if seen is None else seen
    if name in seen or name not in module.computations:
        return 0
    seen.add(name)
    n = 0
    for i in module.computations[name].instructions:
        n += i.opcode == "fft"
        for callee in _NAME.findall(" ".join(re.findall(r"\b(?:calls|to_apply)=(\{[^}]*\}|%[\w.\-]+)", i.attributes))):
            n += _ffts_in(module, callee, seen)
    return n


def walk(module: Module, name: str | None = None, pick=max, region: str = "entry") -> Tally:
    """The kernels of computation ``name`` (the entry) and the control flow under it: each ``while``
    body and condition once, each ``conditional`` at the branch that ``pick`` (``max``/``min``) chooses
    by estimated bytes."""
    computation = module.computations[module.entry if name is None else name]
    tally = Tally()
    for i in computation.instructions:
        if i.opcode in FREE or i.opcode in ("async-done", "async-update"):
            continue
        if i.opcode == "while":
            for callee in i.called("condition") + i.called("body"):
                tally.add(walk(module, callee, pick, f"{region} > while {i.name}"))
        elif i.opcode == "conditional":
            callees = i.called("branch_computations") or i.called("true_computation") + i.called("false_computation")
            branches = [walk(module, c, pick, f"{region} > {i.name} branch {k}") for k, c in enumerate(callees)]
            if branches:
                tally.add(pick(branches, key=lambda t: t.bytes))
        elif i.opcode in ("call", "async-start"):
            for callee in i.called("to_apply") + i.called("calls"):
                tally.add(walk(module, callee, pick, f"{region} > {i.opcode} {i.name}"))
        else:
            size = instruction_bytes(module, computation, i)
            tally.bytes += size
            tally.kernels += 1
            tally.fusions += i.opcode == "fusion"
            tally.ffts += i.opcode == "fft" or sum(_ffts_in(module, c) for c in i.called("calls"))
            tally.items.append((size, computation, i, region))
    return tally


def program_counts(module: Module) -> dict[str, int]:
    """Kernels and fusions of every top-level computation reachable from the entry (all branches of
    every conditional, each loop body once), and the FFT instructions of the whole module."""
    reached, todo = set(), [module.entry]
    kernels = fusions = 0
    while todo:
        name = todo.pop()
        if name in reached or name not in module.computations:
            continue
        reached.add(name)
        for i in module.computations[name].instructions:
            if i.opcode in CONTROL:
                todo += i.called("condition") + i.called("body") + i.called("branch_computations")
                todo += i.called("true_computation") + i.called("false_computation") + i.called("to_apply")
                todo += i.called("calls")
            elif i.opcode not in FREE:
                kernels += 1
                fusions += i.opcode == "fusion"
    ffts = sum(i.opcode == "fft" for c in module.computations.values() for i in c.instructions)
    return {"kernels": kernels, "fusions": fusions, "ffts": ffts}


def _sources(module: Module, computation: Computation, instruction: Instruction, root: Path) -> dict:
    own = module.source(instruction, root)
    inner: dict[str, int] = {}
    fused = module.computations.get(next(iter(instruction.called("calls")), ""))
    for i in fused.instructions if fused is not None else ():
        lines = module.source(i, root)
        if lines:
            inner[lines[0]] = inner.get(lines[0], 0) + 1
    return {
        "source": own[0] if own else None,
        "stack": own[:6],
        "fused_sources": sorted(inner, key=lambda k: -inner[k])[:5],
    }


def by_function(module: Module, items, top: int, root: Path = ROOT, skip: tuple[str, ...] = ("benchmarks/",)) -> list:
    """Bytes of ``items`` (a :class:`Tally`'s) per function of this repository, *inclusive*: a kernel
    counts for every function on its stack (the functions under ``Stepper.step`` say where its bytes
    go), and *exclusive*: for the innermost one only. Frames in ``skip`` (the harness) are left out."""
    inclusive: dict[str, float] = {}
    exclusive: dict[str, float] = {}
    for size, _, i, _ in items:
        lines = [line for line in module.source(i, root) if not line.startswith(skip)]
        stack = [line.split(":", 1)[0] + " " + line.split(" ", 1)[1] for line in lines]
        for name in dict.fromkeys(stack):
            inclusive[name] = inclusive.get(name, 0) + size
        if stack:
            exclusive[stack[0]] = exclusive.get(stack[0], 0) + size
    return [{"function": name, "bytes": size, "exclusive_bytes": exclusive.get(name, 0)}
            for name, size in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]]  # fmt: skip


def analyse(compiled, cells: int = 1, top: int = 10, root: Path = ROOT) -> dict:
    """The cost of a ``jax.stages.Compiled`` (see the module docstring); bytes and flops also per cell
    (``cells``: the grid's cells, 1 for totals only)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # a list of one dict before jax 0.4.30
    module = parse_hlo(compiled.as_text())
    xla_convention = walk(module, pick=max)
    common = walk(module, pick=min)
    total = max(common.bytes, 1)
    consumers = []
    for size, computation, i, region in sorted(common.items, key=lambda item: -item[0])[:top]:
        consumers.append({
            "instruction": i.name, "opcode": i.opcode, "bytes": size, "bytes_per_cell": size / cells,
            "share": size / total, "op_name": i.metadata("op_name"), "region": region,
            **_sources(module, computation, i, root),
        })  # fmt: skip
    bytes_accessed = float(cost.get("bytes accessed", 0.0))
    return {
        "bytes_accessed": bytes_accessed,
        "bytes_per_cell": bytes_accessed / cells,
        "flops": float(cost.get("flops", 0.0)),
        "flops_per_cell": float(cost.get("flops", 0.0)) / cells,
        "estimated_bytes": xla_convention.bytes,
        "estimate_vs_xla": xla_convention.bytes / bytes_accessed if bytes_accessed else None,
        **program_counts(module),
        "common_path": {
            "bytes": common.bytes,
            "bytes_per_cell": common.bytes / cells,
            "kernels": common.kernels,
            "fusions": common.fusions,
            "ffts": common.ffts,
        },  # fmt: skip
        "top": consumers,
        "by_function": by_function(module, common.items, 2 * top, root),
    }
