"""Set a new password: shown instead of every other page after signing in with a one-time password."""

from __future__ import annotations

import streamlit as st

from app import actions, auth, state
from db.accounts import MIN_PASSWORD_CHARS
from fractal_core.errors import InputError

user = auth.current_user()
if user is None:
    st.stop()
st.header("Choose your password")
st.info(
    "You signed in with a one-time password. Choose your own before going on: a different one, "
    f"at least {MIN_PASSWORD_CHARS} characters."
)
with st.form("password"):
    first = st.text_input("New password", type="password", key="pw_new", autocomplete="new-password")
    second = st.text_input("Repeat it", type="password", key="pw_again", autocomplete="new-password")
    submitted = st.form_submit_button("Save password", type="primary", key="pw_submit")
if submitted:
    if first != second:
        st.error("The two passwords differ.")
    else:
        try:
            actions.change_own_password(state.engine(), user, first)
        except InputError as exc:
            st.error(str(exc))
        else:
            state.flash("Password saved.")
            st.rerun()
