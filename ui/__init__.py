"""Pure renderers and calculations for the Streamlit pages: no database, no HTTP."""
