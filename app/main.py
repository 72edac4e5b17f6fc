"""The HiCo workbench: ``streamlit run app/main.py`` (add ``-- PATH`` to open on the dataset folder PATH, which may
then be outside the project and your home folder). The chosen dataset is kept in the URL (``?dataset=``), so a
reload keeps it. Binds to localhost (see .streamlit/config.toml)."""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent):  # the pages beside this file, and the hico package without an install
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import curves_page  # noqa: E402
import data_page  # noqa: E402
import embeddings_page  # noqa: E402
import evaluate_page  # noqa: E402
import train_page  # noqa: E402
from common import dataset_path  # noqa: E402

st.set_page_config(page_title="HiCo workbench", page_icon="🫁", layout="wide")
pages = [
    st.Page(data_page.page, title="Data", url_path="data", default=True),
    st.Page(train_page.page, title="Train", url_path="train"),
    st.Page(curves_page.page, title="Curves", url_path="curves"),
    st.Page(embeddings_page.page, title="Embeddings", url_path="embeddings"),
    st.Page(evaluate_page.page, title="Evaluate", url_path="evaluate"),
]
dataset_path()  # on every page: the session's dataset (or the URL's, after a reload) stays named in the URL
st.navigation(pages).run()
