"""The web server of ``fractal serve``: Streamlit serving ``app/main.py``, plus the two routes that set and
expire the ``HttpOnly`` session cookie (:mod:`app.session_cookie`), which a Streamlit script cannot do itself.

``streamlit run app/web.py`` finds the ``st.App`` below and serves it (Streamlit's own Starlette server); the
pages are exactly those of ``streamlit run app/main.py``, which still works for one person without sign-in but
cannot keep a sign-in across reloads.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import session_cookie

app = st.App(str(Path(__file__).resolve().with_name("main.py")), routes=session_cookie.routes())
