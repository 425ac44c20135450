"""GastricVision web app: the entry point of ``streamlit run app/Home.py``.

Sets up the page, the navigation between the six pages in ``views/`` and the shared
sidebar, then runs the selected page inside an error boundary.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

APP_DIR = Path(__file__).resolve().parent
if str(APP_DIR) not in sys.path:
    # `streamlit run` puts this folder on sys.path; other runners (AppTest) may not.
    sys.path.insert(0, str(APP_DIR))

from ui.boundary import configure_logging, guard  # noqa: E402
from ui.datasource import render_sidebar  # noqa: E402

PAGES = [
    st.Page("views/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("views/review.py", title="Review", icon=":material/biotech:"),
    st.Page("views/gallery.py", title="Gallery and errors", icon=":material/grid_view:"),
    st.Page("views/teaching.py", title="Teaching quiz", icon=":material/school:"),
    st.Page("views/batch.py", title="Batch scoring", icon=":material/table_view:"),
    st.Page("views/models.py", title="Models", icon=":material/model_training:"),
]


def main() -> None:
    st.set_page_config(page_title="GastricVision", page_icon=":material/biotech:", layout="wide")
    configure_logging()
    page = st.navigation(PAGES)
    with guard("sidebar"):
        render_sidebar()
    with guard(f"page {page.title}"):
        page.run()


main()
