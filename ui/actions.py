"""Row actions and messages that outlive a fragment's auto-refresh.

A message written with ``flash`` stays on screen (in session state) until the trader closes it or a newer one
replaces it; ``st.success`` inside an auto-refreshing fragment would vanish with the next refresh, seconds later.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

KINDS = {"success": st.success, "error": st.error, "info": st.info, "warning": st.warning}


def flash(key: str, kind: str, text: str, command_id: int | None = None) -> None:
    """Keep ``text`` on screen; with ``command_id`` (a control command just queued) the message follows that
    command: waiting for the service, then its result."""
    st.session_state[f"flash.{key}"] = (kind, text, command_id)


def show_flash(key: str, outcome=None) -> None:
    """The kept message. ``outcome(command_id) -> (kind, text to add) | None`` tells how the command it follows
    went (the page reads it; ui/ reads no database)."""
    msg = st.session_state.get(f"flash.{key}")
    if not msg:
        return
    kind, text, command_id = (*msg, None)[:3]
    now = outcome(command_id) if command_id is not None and outcome is not None else None
    if now is not None:
        kind, text = now[0], f"{text} {now[1]}"
    left, right = st.columns([12, 1])
    with left:
        KINDS.get(kind, st.info)(text)
    if right.button("✕", key=f"flash.{key}.close", help="Dismiss"):
        st.session_state.pop(f"flash.{key}", None)
        st.rerun()


def selected_row(event, df: pd.DataFrame) -> dict | None:
    """The row the trader selected in ``st.dataframe(..., on_select='rerun', selection_mode='single-row')``."""
    rows = getattr(getattr(event, "selection", None), "rows", None) or []
    if not rows or df is None or df.empty or rows[0] >= len(df):
        return None
    return df.iloc[rows[0]].to_dict()


def first(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``columns`` first (those present), then the rest in their order: what the trader reads first comes first."""
    lead = [c for c in columns if c in df.columns]
    return df[lead + [c for c in df.columns if c not in lead]]
