"""One registry of control commands (db.commands.COMMANDS) for the UI, which enqueues them, and the service, which
carries them out: each registered kind has exactly one handler (checked before the service starts anything),
an unregistered kind is refused on both sides, and both sides validate a payload with the same function."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from config import load_settings
from db.commands import COMMANDS, CommandError, CommandSpec, RegistryError, check_handlers, enqueue_control
from db.models import ControlCommand
from services.control import ControlHandlers, handles
from services.runner import ServiceRunner
from tests.builders import fresh_row

ROOT = Path(__file__).resolve().parents[2]


def _runner(db) -> ServiceRunner:
    """The real runner on a test database, not started: nothing runs, no broker is called."""
    return ServiceRunner(load_settings({"APP__DB__PATH": str(db.path)}), db)


def test_check_handlers_when_the_service_has_one_handler_per_registered_command_then_passes():
    assert sorted(ControlHandlers.handled_kinds()) == sorted(COMMANDS)
    ControlHandlers.check()
    check_handlers(list(COMMANDS))


@pytest.mark.parametrize("kinds, message", [
    ([k for k in COMMANDS if k != "exit_run"], "no handler for: exit_run"),
    ([*COMMANDS, "drop_all"], "handler for an unregistered command: drop_all"),
    ([*COMMANDS, "cancel_intent"], "more than one handler for: cancel_intent"),
])
def test_check_handlers_when_kinds_and_handlers_disagree_then_registry_error_names_the_kind(kinds, message):
    with pytest.raises(RegistryError, match=message):
        check_handlers(kinds)


def test_handlers_when_a_kind_is_handled_twice_then_the_check_refuses():
    class Twice(ControlHandlers):
        @handles("exit_run")
        def exit_run_again(self, p: dict) -> str:
            return "again"

    with pytest.raises(RegistryError, match="more than one handler for: exit_run"):
        Twice.check()


def test_runner_when_a_registered_command_has_no_handler_then_it_refuses_to_start(db, monkeypatch):
    monkeypatch.setitem(COMMANDS, "rotate_keys", CommandSpec("a command a newer UI could queue"))
    with pytest.raises(RegistryError, match="no handler for: rotate_keys"):
        _runner(db)


def test_service_process_when_a_registered_command_has_no_handler_then_exits_with_a_clear_message(tmp_path):
    script = ("import sys; import db.commands as c; c.COMMANDS['rotate_keys'] = c.CommandSpec('newer UI'); "
              "from services.__main__ import main; sys.exit(main(sys.argv[1:]))")
    env = dict(os.environ, PYTHONPATH=str(ROOT), APP__SECRETS__KEY_FILE=str(tmp_path / "k"))
    out = subprocess.run([sys.executable, "-c", script, "--db", str(tmp_path / "r.db")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 5, out.stderr[-2000:]
    assert "AlgoMirror service not started" in out.stderr and "no handler for: rotate_keys" in out.stderr


def test_unregistered_kind_when_enqueued_or_written_by_hand_then_refused_by_both_sides_and_nothing_done(db):
    with pytest.raises(CommandError, match="Unknown control command 'drop_all'"):
        enqueue_control(db, "drop_all", {})
    with db.write() as s:
        s.add(ControlCommand(kind="drop_all", payload_json="{}"))
    runner = _runner(db)
    assert runner.process_commands() == 1
    with db.read() as s:
        [row] = s.scalars(select(ControlCommand)).all()
    assert row.status == "failed" and row.result == "CommandError: Unknown control command 'drop_all'"


@pytest.mark.parametrize("kind, payload", [
    ("exit_run", {"run_id": 2.9}), ("exit_run", {"run_id": "2"}), ("exit_run", {"run_id": True}),
    ("refresh_account", {}), ("cancel_intent", {"intent_id": -1}), ("exit_run", [2]), ("halt_everything", {}),
    ("square_off_position", {"account_id": 1, "symbol": "SBIN", "exchange": "NASDAQ", "product": "MIS"}),
])
def test_payload_when_invalid_then_ui_and_service_refuse_it_with_the_same_message(db, kind, payload):
    with pytest.raises(CommandError) as ui:
        enqueue_control(db, kind, payload)
    with db.write() as s:  # what anything with the database file could write
        s.add(ControlCommand(kind=kind, payload_json=json.dumps(payload)))
    _runner(db).process_commands()
    with db.read() as s:
        [row] = s.scalars(select(ControlCommand)).all()
    assert (row.status, row.result) == ("failed", f"CommandError: {ui.value}")


def test_control_module_when_imported_then_it_needs_nothing_of_the_runner():
    """The handlers get their dependencies (ControlDeps) from the runner; they never reach into it."""
    import ast
    tree = ast.parse((ROOT / "services" / "control.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "services.runner" not in imported  # not even under TYPE_CHECKING
    probe = "import sys, services.control; print('services.runner' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr[-2000:]
