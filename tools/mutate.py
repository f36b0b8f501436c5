"""Mutation testing: does the suite notice a small deliberate bug?

    python tools/mutate.py                         # every target module, 30 mutants each
    python tools/mutate.py --max 10 src/soketi_impl/signing.py src/soketi_impl/webhooks
    python tools/mutate.py --list src/soketi_impl/signing.py   # the mutants, not run
    python tools/mutate.py src/soketi_impl/signing.py:20 src/soketi_impl/adapters:3

For each target module it enumerates simple mutations (a comparison flipped, a
number or boolean changed, ``and``/``or`` swapped, a ``not`` dropped, ``+``/``-``
swapped, a statement replaced by ``pass``, a returned value replaced by ``None``),
takes ``--max`` of them (a seeded sample), and runs the module's own narrow test
selection (``TESTS`` below) against each one, one at a time, stopping at the first
failure. A mutant is *killed* when the tests fail (or time out), *survives* when
they pass. Logging calls, docstrings, type annotations and strings are not mutated
(changing them is not a behaviour change the tests should see).

Everything happens in a temporary copy of ``src/`` and ``tests/`` (the working tree
is never touched), with ``PYTHONPATH`` pointing at the copy and bytecode caching off.
A module with a compiled twin (``twins/X_py.py`` next to ``X_c.pyx``) is tested with
``SOKETI_IMPL_NO_EXTENSIONS=1`` so the pure-Python twin is the one that runs.

Prints, and writes to ``--out``, the kill rate per module and every survivor as
``file:line  mutation``. Exit status 0 (a report, not a gate).
"""

from __future__ import annotations

import argparse
import ast
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = "src/soketi_impl"

#: The modules mutated by default.
TARGETS = [
    f"{PKG}/twins/_protocol_py.py",
    f"{PKG}/signing.py",
    f"{PKG}/pusher",
    f"{PKG}/webhooks",
    f"{PKG}/adapters",
]

#: Test selection per module (longest matching prefix wins): fast tests, pytest arguments.
TESTS: dict[str, list[str]] = {
    f"{PKG}/twins/_protocol_py.py": [
        "tests/test_protocol.py", "tests/test_protocol_rawdata.py", "tests/test_hostile_protocol.py",
    ],
    f"{PKG}/signing.py": ["tests/test_signing.py", "tests/test_encryption.py"],
    f"{PKG}/pusher": [
        "tests/test_pusher_inproc.py", "tests/test_core_protocol.py", "tests/test_core_observers.py",
    ],
    f"{PKG}/pusher/api.py": [
        "tests/test_pusher_inproc.py", "tests/test_seed_api.py", "tests/test_core_protocol.py",
        "tests/test_core_observers.py",
    ],
    f"{PKG}/webhooks": ["tests/test_webhooks_observer.py", "tests/test_webhooks.py"],
    # one event loop of the two the in-process tests run on: half the time, same paths
    f"{PKG}/adapters": [
        "tests/test_redis_adapter.py", "tests/test_webhooks_cluster.py", "tests/test_pusher_inproc.py",
        "-k", "not uvloop",
    ],
}

_CMP_SWAP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In,
    ast.Is: ast.IsNot, ast.IsNot: ast.Is,
}
_BIN_SWAP: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.FloorDiv, ast.FloorDiv: ast.Mult, ast.Div: ast.Mult,
}
_SYM = {
    ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
    ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not",
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.FloorDiv: "//", ast.Div: "/",
}
_LOG_NAMES = {"debug", "info", "warning", "error", "exception", "critical", "log"}


@dataclass
class Point:
    """One mutation: where, what, and how to apply it to a freshly parsed tree."""

    line: int
    what: str
    apply: Callable[[], None] = field(repr=False)


def _is_log_call(node: ast.AST) -> bool:
    if isinstance(node, ast.Expr):
        node = node.value
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
        return False
    owner = node.func.value
    name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
    return node.func.attr in _LOG_NAMES and "log" in name.lower()


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _type_checking(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test)


def points(tree: ast.Module) -> list[Point]:
    """Every mutation point of ``tree``, in a deterministic order."""
    found: list[Point] = []
    _visit(tree, found)
    return found


def _visit(node: ast.AST, out: list[Point]) -> None:  # noqa: C901 (one switch over node kinds)
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            new = _CMP_SWAP.get(type(op))
            if new is not None:
                def flip(n: ast.Compare = node, i: int = i, new: type[ast.cmpop] = new) -> None:
                    n.ops[i] = new()
                out.append(Point(node.lineno, f"`{_SYM[type(op)]}` -> `{_SYM[new]}`", flip))
    elif isinstance(node, ast.BoolOp):
        other = ast.Or if isinstance(node.op, ast.And) else ast.And
        def swap(n: ast.BoolOp = node, other: type[ast.boolop] = other) -> None:
            n.op = other()
        out.append(Point(node.lineno, f"`{'and' if other is ast.Or else 'or'}` -> `{'or' if other is ast.Or else 'and'}`", swap))
    elif isinstance(node, ast.BinOp) and type(node.op) in _BIN_SWAP:
        new_op = _BIN_SWAP[type(node.op)]
        def binswap(n: ast.BinOp = node, new: type[ast.operator] = new_op) -> None:
            n.op = new()
        out.append(Point(node.lineno, f"`{_SYM[type(node.op)]}` -> `{_SYM[new_op]}`", binswap))
    elif isinstance(node, ast.Constant) and not isinstance(node.value, (str, bytes)) and node.value is not None:
        value = node.value
        if isinstance(value, bool):
            new_value: bool | int | float | None = not value
        elif isinstance(value, int):
            new_value = 1 if value == 0 else value + 1
        elif isinstance(value, float):
            new_value = value * 2 if value else 1.0
        else:
            new_value = None
        if new_value is not None:
            def const(n: ast.Constant = node, v: bool | int | float = new_value) -> None:
                n.value = v
            out.append(Point(node.lineno, f"{value!r} -> {new_value!r}", const))
    for name, value in ast.iter_fields(node):
        if name in ("annotation", "returns", "type_comment"):
            continue
        if isinstance(value, list):
            stmts = [v for v in value if isinstance(v, ast.stmt)]
            for i, child in enumerate(value):
                if not isinstance(child, ast.AST):
                    continue
                if isinstance(child, ast.stmt):
                    if _is_docstring(child) or _is_log_call(child) or _type_checking(child):
                        continue
                    if name in ("body", "orelse", "finalbody") and stmts:
                        _statement_points(value, i, child, out)
                elif isinstance(child, ast.UnaryOp) and isinstance(child.op, ast.Not):
                    _not_point(value, i, child, out)
                _visit(child, out)
        elif isinstance(value, ast.AST):
            if isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.Not):
                def drop_not(parent: ast.AST = node, f: str = name, n: ast.UnaryOp = value) -> None:
                    setattr(parent, f, n.operand)
                out.append(Point(value.lineno, "`not x` -> `x`", drop_not))
            if _is_log_call(value):
                continue
            _visit(value, out)


def _not_point(seq: list[ast.AST], i: int, child: ast.UnaryOp, out: list[Point]) -> None:
    def drop_not(seq: list[ast.AST] = seq, i: int = i, n: ast.UnaryOp = child) -> None:
        seq[i] = n.operand
    out.append(Point(child.lineno, "`not x` -> `x`", drop_not))


def _statement_points(seq: list[ast.AST], i: int, child: ast.stmt, out: list[Point]) -> None:
    if isinstance(child, ast.Return) and child.value is not None and not (
        isinstance(child.value, ast.Constant) and child.value.value is None
    ):
        def ret_none(n: ast.Return = child) -> None:
            n.value = ast.Constant(None)
        out.append(Point(child.lineno, "`return x` -> `return None`", ret_none))
    elif isinstance(child, ast.Assign) and any(
        isinstance(t, ast.Name) and t.id in ("__all__", "__slots__") for t in child.targets
    ):
        return  # deleting these changes no behaviour a test could see
    elif isinstance(child, (ast.Expr, ast.Assign, ast.AugAssign, ast.Delete, ast.Raise)):
        kind = type(child).__name__.lower()
        def to_pass(seq: list[ast.AST] = seq, i: int = i, n: ast.stmt = child) -> None:
            seq[i] = ast.copy_location(ast.Pass(), n)
        out.append(Point(child.lineno, f"{kind} statement deleted", to_pass))


def mutated_source(source: str, index: int) -> tuple[str, Point]:
    """``source`` with its ``index``-th mutation applied (parsed afresh each time)."""
    tree = ast.parse(source)
    point = points(tree)[index]
    point.apply()
    ast.fix_missing_locations(tree)
    return ast.unparse(tree), point


def selection_for(rel: str) -> list[str]:
    best = max((k for k in TESTS if rel == k or rel.startswith(k.rstrip("/") + "/")), key=len, default=None)
    return TESTS[best] if best else []


def has_twin(path: Path) -> bool:
    return path.name.endswith("_py.py") and path.with_name(path.name[: -len("_py.py")] + "_c.pyx").exists()


def expand(targets: list[str], default_max: int) -> list[tuple[str, int]]:
    """``(module, mutants to run)`` for each file under ``targets`` (``path:N`` sets N)."""
    files: list[tuple[str, int]] = []
    for t in targets:
        path, _, n = t.partition(":")
        p = ROOT / path
        found = sorted(p.rglob("*.py")) if p.is_dir() else [p]
        files += [(str(f.relative_to(ROOT)), int(n) if n else default_max)
                  for f in found if f.name != "__init__.py" or f.stat().st_size > 2000]
    return files


def run_tests(work: Path, tests: list[str], env: dict[str, str], timeout: float) -> str:
    """``killed``, ``survived`` or ``timeout`` for one run of ``tests`` in ``work``."""
    argv = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
            "--benchmark-disable", "-o", "addopts=", "--timeout", str(int(timeout)), *tests]
    try:
        proc = subprocess.run(argv, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return "timeout"
    return "survived" if proc.returncode == 0 else "killed"


def _copy_tree(work: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "node_modules", "*.c", ".hypothesis", "browser")
    for name in ("src", "tests", "examples"):
        shutil.copytree(ROOT / name, work / name, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", work / "pyproject.toml")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("targets", nargs="*", default=TARGETS,
                    help="files or folders, PATH:N for N mutants per module there (default: %(default)s)")
    ap.add_argument("--max", type=int, default=30, help="mutants per module (a seeded sample)")
    ap.add_argument("--seed", type=int, default=9)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per test run (over it: killed)")
    ap.add_argument("--out", type=Path, help="also write the report here")
    ap.add_argument("--list", action="store_true", help="list the sampled mutants, run nothing")
    args = ap.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the temporary copy is removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    totals = [0, 0]
    with tempfile.TemporaryDirectory(prefix="soketi-mutate-") as tmp:
        work = Path(tmp)
        if not args.list:
            _copy_tree(work)
        base_env = {k: v for k, v in os.environ.items() if k != "SOKETI_IMPL_NO_EXTENSIONS"}
        base_env.update(PYTHONPATH=str(work / "src"), PYTHONDONTWRITEBYTECODE="1")
        started = time.monotonic()
        say(f"# tools/mutate.py --max {args.max} --seed {args.seed} --timeout {args.timeout:g}")
        survivors: list[str] = []
        for rel, most in expand(args.targets, args.max):
            source = (ROOT / rel).read_text()
            every = points(ast.parse(source))
            chosen = sorted(random.Random(f"{args.seed}:{rel}").sample(range(len(every)), min(most, len(every))))
            tests = selection_for(rel)
            if args.list:
                for i in chosen:
                    say(f"{rel}:{every[i].line}  {every[i].what}")
                continue
            if not chosen or not tests:
                say(f"{rel}: skipped ({'no mutation points' if not chosen else 'no test selection'})")
                continue
            env = dict(base_env)
            if has_twin(ROOT / rel):
                env["SOKETI_IMPL_NO_EXTENSIONS"] = "1"
            target = work / rel
            # tried twice: one flaky failure should not cost the module its run
            if not any(run_tests(work, tests, env, args.timeout) == "survived" for _ in range(2)):
                say(f"{rel}: skipped (the unmutated tests fail in the copy, twice)")
                continue
            killed = 0
            t0 = time.monotonic()
            for i in chosen:
                text, point = mutated_source(source, i)
                target.write_text(text)
                try:
                    outcome = run_tests(work, tests, env, args.timeout)
                finally:
                    target.write_text(source)
                print(f"  {rel}:{point.line}  {point.what}: {outcome}", file=sys.stderr, flush=True)
                if outcome == "survived":
                    survivors.append(f"{rel}:{point.line}  {point.what}")
                else:
                    killed += 1
            n = len(chosen)
            totals[0] += killed
            totals[1] += n
            say(f"{rel}: {killed}/{n} killed ({100 * killed / n:.0f}%) of {len(every)} points, "
                f"{time.monotonic() - t0:.0f} s; tests: {' '.join(Path(t).name for t in tests)}")
        if not args.list:
            rate = 100 * totals[0] / totals[1] if totals[1] else 0.0
            say(f"total: {totals[0]}/{totals[1]} killed ({rate:.0f}%) in {time.monotonic() - started:.0f} s")
            say("survivors:")
            for s in survivors:
                say(f"  {s}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
