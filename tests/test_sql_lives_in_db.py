"""Every statement of ours lives in db/: the service calls functions there, never SQL strings or SQLAlchemy
statement builders (issue 13, "SQL lives in db/"). Read with ``ast``: nothing is imported."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SQL = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH|PRAGMA|CREATE|DROP|BEGIN)\b|\b(FROM|WHERE|SET|VALUES)\b.*\?",
                 re.IGNORECASE)
BUILDERS = {"select", "update", "delete", "insert", "text", "and_", "or_", "func"}


def _offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sqlalchemy":
            names = {a.name for a in node.names} & BUILDERS
            if names:
                out.append(f"{path.relative_to(ROOT)}:{node.lineno}: imports {sorted(names)} from {node.module}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if SQL.search(node.value):
                out.append(f"{path.relative_to(ROOT)}:{node.lineno}: SQL text {node.value[:60]!r}")
    return out


def test_services_when_scanned_then_no_sql_text_and_no_statement_builders():
    offences = [o for pkg in ("services", "api") for f in sorted((ROOT / pkg).glob("*.py")) for o in _offences(f)]
    assert not offences, "SQL outside db/ (move it into the table's store module):\n" + "\n".join(offences)


def test_scanner_when_a_module_writes_sql_then_it_is_found(tmp_path):
    bad = ROOT / "services" / "_probe_sql_scanner.py"
    try:
        bad.write_text('from sqlalchemy import select\nQ = "SELECT id FROM order_intents WHERE id = ?"\n')
        found = _offences(bad)
    finally:
        bad.unlink()
    assert len(found) == 2 and "imports ['select']" in found[0] and "SQL text" in found[1]
