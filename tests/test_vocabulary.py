"""One vocabulary: order, run and leg status words are written only in the FSM modules.

Every other product module names a status through ``db.order_fsm.Status`` / ``db.run_fsm.RunStatus`` /
``db.run_fsm.LegStatus`` and their named sets, and builds SQL ``IN (...)`` lists with ``sql_in``, so adding or
renaming a status cannot miss a query, an index, a poller set or a UI filter.

What counts as a stray literal: a string constant in the code (docstrings are prose and are not read) that
  - equals a status word exactly ("entered"), or
  - contains one as a whole word between quotes, as SQL does ("... WHERE status = 'queued'").
The status words are the values of the three enums, so the list cannot drift from the FSMs.

Where the words may appear:
  - the FSM modules (they define them; db/order_fsm.py also holds the broker's own order_status words in
    BROKER_STATUS_MAP, the one place the broker's vocabulary meets ours);
  - as the value of a member of one of the named enums of another vocabulary that shares a word
    (OTHER_VOCABULARIES): control commands are queued / done / failed, option-chain sessions are
    requested / active / expired / error. Those enums are then the only way to spell those words too.
Not scanned: tests/ (they assert on literal words on purpose) and simulator/ (it speaks the broker's
vocabulary: order_status 'open', 'complete', 'pending', ..., a different set of words).
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

from db.order_fsm import Status
from db.run_fsm import LegStatus, RunStatus

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ["app.py", "config.py", "pages", "ui", "db", "services", "broker", "scripts", "api"]
FSM_MODULES = {"db/order_fsm.py", "db/run_fsm.py"}
# (file, enum class) -> the status words its members may take as values.
OTHER_VOCABULARIES = {
    ("db/vocab.py", "CommandStatus"): {"queued", "failed"},
    ("db/vocab.py", "ChainStatus"): {"active"},
    ("db/vocab.py", "TradingState"): {"active"},
    ("db/vocab.py", "StopStatus"): {"pending", "exited", "cancelled", "failed"},
    ("db/vocab.py", "TimedState"): {"pending", "entered", "failed", "exiting", "exited"},
}
ALLOWLIST: set[str] = set()  # files exempt from the rule: none

WORDS = frozenset(s.value for enum in (Status, RunStatus, LegStatus) for s in enum)
QUOTED = re.compile(r"""(['"])(%s)\1""" % "|".join(sorted(WORDS, key=len, reverse=True)))


def product_files() -> list[Path]:
    out = []
    for entry in PRODUCT:
        p = ROOT / entry
        out += [p] if p.is_file() else sorted(p.rglob("*.py"))
    return out


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the bare string statements (docstrings and other prose blocks)."""
    return {id(n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)}


def _vocabulary_members(tree: ast.AST, rel: str) -> dict[int, set[str]]:
    """ids of the member-value constants of this file's OTHER_VOCABULARIES enums -> the words they may be."""
    out = {}
    for cls in ast.walk(tree):
        if isinstance(cls, ast.ClassDef) and (rel, cls.name) in OTHER_VOCABULARIES:
            for stmt in cls.body:
                if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant):
                    out[id(stmt.value)] = OTHER_VOCABULARIES[(rel, cls.name)]
    return out


def stray_literals(path: Path) -> list[str]:
    rel = path.relative_to(ROOT).as_posix()
    if rel in FSM_MODULES:
        return []
    tree = ast.parse(path.read_text(), filename=rel)
    prose, members = _docstrings(tree), _vocabulary_members(tree, rel)
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in prose:
            continue
        words = {node.value} & WORDS or {m.group(2) for m in QUOTED.finditer(node.value)}
        words -= members.get(id(node), set())
        if words:
            found.append(f"{rel}:{node.lineno}: {', '.join(sorted(words))} in {node.value[:60]!r}")
    return found


def test_no_status_literal_outside_the_fsm_modules():
    stray = [hit for f in product_files() if f.relative_to(ROOT).as_posix() not in ALLOWLIST
             for hit in stray_literals(f)]
    assert not stray, ("status words written outside db/order_fsm.py and db/run_fsm.py; use the enums, their "
                       "named sets and sql_in():\n" + "\n".join(stray))


def test_the_scan_sees_the_literals_it_is_meant_to_find(tmp_path, monkeypatch):
    src = tmp_path / "db" / "sample.py"
    src.parent.mkdir()
    src.write_text('"""A docstring may say \'queued\'."""\n'
                   'A = "entered"\n'
                   'B = "SELECT id FROM order_intents WHERE status IN (\'sent\', \'unknown\')"\n'
                   'C = f"UPDATE strategy_runs SET status = \'exiting\' WHERE id = {1}"\n'
                   'D = "the order was sent"  # prose, not a quoted status\n'
                   'E = "open"  # a broker word, not ours\n')
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    hits = stray_literals(src)
    assert [h.split(":")[1] for h in hits] == ["2", "3", "4"]
    assert "sent, unknown" in hits[1] and "exiting" in hits[2]


def test_allowlisted_and_vocabulary_files_exist():
    for rel in ALLOWLIST | FSM_MODULES | {f for f, _ in OTHER_VOCABULARIES}:
        assert (ROOT / rel).is_file(), rel
