"""The command-line entry points, one module each: `python -m tfdense COMMAND [ARGS]`.

`python -m tfdense` lists the commands; `python -m tfdense COMMAND --help` explains one. Each
module also runs alone (`python -m tfdense.cli.bench`), and the training command keeps its
documented name, `python -m tfdense.train`. A command checks its arguments before TensorFlow
loads, so a mistake costs one line and exit code 2.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

COMMANDS = tuple(sorted(m.name for m in pkgutil.iter_modules(__path__)))


def summary(command: str) -> str:
    """The first line of a command module's docstring, read without importing it (no TensorFlow)."""
    import ast
    from pathlib import Path

    doc = ast.get_docstring(ast.parse((Path(__file__).parent / f"{command}.py").read_text())) or ""
    return doc.splitlines()[0] if doc else ""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        width = max(map(len, COMMANDS))
        lines = ["usage: python -m tfdense COMMAND [ARGS]  (python -m tfdense COMMAND --help)", "", "commands:"]
        lines += [f"  {c:<{width}}  {summary(c)}" for c in COMMANDS]
        print("\n".join(lines))
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    sys.argv = [f"python -m tfdense {command}", *rest]
    return importlib.import_module(f"tfdense.cli.{command}").main(rest)
