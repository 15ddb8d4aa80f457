"""Settings: every setting with its env var, default, current value and help (read-only)."""
import pandas as pd
import streamlit as st

from config import describe
from pages._common import init_page

db, settings, health = init_page("Settings", ":material/settings:")

st.caption("Settings are read from environment variables `APP__SECTION__KEY` at start; restart both the service "
           "and this app after changing them. API keys are never shown here.")
st.markdown(f"**Database:** `{db.path}`")


def current(env: str):
    _, section, key = env.split("__", 2)
    value = getattr(getattr(settings, section.lower()), key.lower())
    return "(set)" if section == "SECRETS" and key == "FERNET_KEY" and value else value


rows = [dict(setting=env, current=str(current(env)), default=str(default), help=help_text)
        for env, default, help_text in describe()]
df = pd.DataFrame(rows)
df["changed"] = df["current"] != df["default"]
st.dataframe(df, hide_index=True, width="stretch", height=35 * (len(df) + 1),
             column_config={"changed": st.column_config.CheckboxColumn("changed")}, key="settings.table")
