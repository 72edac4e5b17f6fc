"""The HiCo workbench: ``streamlit run app/main.py`` (add ``-- PATH`` to open on the dataset folder PATH, which may
then be outside the project and your home folder). The chosen dataset is kept in the URL (``?dataset=``), so a
reload keeps it.

It serves 127.0.0.1 only and sends no usage statistics, from whatever folder it is started
(``app/.streamlit/config.toml``, read because it lies beside this script), unless asked otherwise
(``--server.address 0.0.0.0`` or ``STREAMLIT_SERVER_ADDRESS``). Should the server listen on every interface or
send statistics without being asked (a Streamlit that does not read that file), a page shows nothing but the
reason (:func:`common.exposure_problem`)."""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent):  # the pages beside this file, and the hico package without an install
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import compare_page  # noqa: E402
import curves_page  # noqa: E402
import data_page  # noqa: E402
import embeddings_page  # noqa: E402
import evaluate_page  # noqa: E402
import train_page  # noqa: E402
from common import dataset_path, exposure_problem  # noqa: E402

st.set_page_config(page_title="HiCo workbench", page_icon="🫁", layout="wide")
if st.context.headers and (problem := exposure_problem()):  # a browser's request to a real server
    st.error(problem)
    st.stop()
pages = [
    st.Page(data_page.page, title="Data", url_path="data", default=True),
    st.Page(train_page.page, title="Train", url_path="train"),
    st.Page(curves_page.page, title="Curves", url_path="curves"),
    st.Page(embeddings_page.page, title="Embeddings", url_path="embeddings"),
    st.Page(evaluate_page.page, title="Evaluate", url_path="evaluate"),
    st.Page(compare_page.page, title="Compare", url_path="compare"),
]
dataset_path()  # on every page: the session's dataset (or the URL's, after a reload) stays named in the URL
st.navigation(pages).run()
