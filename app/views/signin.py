"""Sign in: the only page a browser without a session can reach (it shows no data)."""

from __future__ import annotations

import streamlit as st

from app import auth
from db.accounts import SignInError

st.header("Sign in to FRACTAL Studio")
with st.form("signin", clear_on_submit=False, enter_to_submit=True):
    name = st.text_input("User name", key="signin_name", max_chars=64, autocomplete="username")
    password = st.text_input(
        "Password", key="signin_password", type="password", max_chars=256, autocomplete="current-password"
    )
    submitted = st.form_submit_button("Sign in", type="primary", key="signin_submit")
if submitted:
    try:
        auth.sign_in(name, password)
    except SignInError as exc:
        st.error(str(exc), icon=":material/lock:")
    else:
        st.rerun()
st.caption("No account yet? Ask your admin (`fractal users add NAME --role annotator`).")
