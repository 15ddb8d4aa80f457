"""AlgoMirror control room: Streamlit router. Run with `streamlit run app.py` (binds 127.0.0.1, see .streamlit/).

Pages live in pages/ (one file each) and are listed here explicitly; every page calls
pages._common.init_page(), which draws the service-health badge in the sidebar and the service-down banner.
"""
import streamlit as st

from db.errors import DbError

st.set_page_config(page_title="AlgoMirror", page_icon=":material/monitor_heart:", layout="wide")

PAGES = {
    "Trading": [
        st.Page("pages/dashboard.py", title="Dashboard", icon=":material/monitoring:", default=True,
                url_path="dashboard"),
        st.Page("pages/quick_order.py", title="Quick Order", icon=":material/bolt:", url_path="quick-order"),
        st.Page("pages/option_chain.py", title="Option Chain", icon=":material/table_chart:", url_path="option-chain"),
        st.Page("pages/strategies.py", title="Strategies", icon=":material/account_tree:", url_path="strategies"),
        st.Page("pages/risk.py", title="Risk Monitor", icon=":material/shield:", url_path="risk"),
        st.Page("pages/orders.py", title="Positions & Orders", icon=":material/receipt_long:", url_path="orders"),
    ],
    "Setup": [
        st.Page("pages/accounts.py", title="Accounts", icon=":material/person:", url_path="accounts"),
        st.Page("pages/api_access.py", title="API & Webhooks", icon=":material/api:", url_path="api"),
        st.Page("pages/health.py", title="Service Health", icon=":material/health_and_safety:", url_path="health"),
        st.Page("pages/settings.py", title="Settings", icon=":material/settings:", url_path="settings"),
    ],
}

st.sidebar.markdown("### :material/monitor_heart: AlgoMirror")
try:
    st.navigation(PAGES).run()
except DbError as exc:  # a page's read or write met a database fault: say what happened, not a traceback
    st.error(str(exc))
