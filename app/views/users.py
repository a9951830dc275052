"""Users (admins only): who may sign in, with which role; add people, change roles, disable accounts."""

from __future__ import annotations

import streamlit as st

from app import actions, page, state
from db.accounts import PermissionDenied
from db.models import ROLES
from fractal_core.errors import InputError

ctx = page.page("Users", "admin")
user, engine = ctx.user, ctx.engine
st.caption(
    "Annotators label and comment; reviewers also adjudicate and see agreement; admins also upload, train, "
    "activate, export and manage users."
)
people = actions.list_users(engine, user)
# A dataframe shows text as text: user names are never rendered as markup.
st.dataframe(
    [{"name": u.name, "role": u.role, "state": "disabled" if u.disabled else "active"} for u in people],
    hide_index=True,
)

with st.form("users_add", clear_on_submit=True):
    st.subheader("Add a user")
    c1, c2, c3 = st.columns(3)
    name = c1.text_input("Name", key="users_new_name", max_chars=64)
    role = c2.selectbox("Role", ROLES, key="users_new_role")
    password = c3.text_input("Initial password", type="password", key="users_new_password")
    if st.form_submit_button("Add user", type="primary", key="users_add_submit"):
        try:
            added = actions.add_user(engine, user, name.strip(), role, password)
        except (InputError, PermissionDenied) as exc:
            st.error(str(exc))
        else:
            state.flash(f"Added {added.name} as {added.role}.")
            st.rerun()

if people:
    st.subheader("Change a user")
    names = [u.name for u in people]
    c1, c2 = st.columns(2)
    who = c1.selectbox("User", names, key="users_pick")
    picked = next(u for u in people if u.name == who)
    new_role = c2.selectbox("Role", ROLES, index=ROLES.index(picked.role), key=f"users_role_{who}")
    b1, b2 = st.columns(2)
    try:
        if b1.button("Save role", key="users_set_role"):
            actions.set_role(engine, user, who, new_role)
            state.flash(f"{who} is now {new_role}.")
            st.rerun()
        label = "Enable" if picked.disabled else "Disable"
        if b2.button(label, key="users_toggle"):
            actions.set_disabled(engine, user, who, not picked.disabled)
            state.flash(f"{label}d {who}.")
            st.rerun()
    except (InputError, PermissionDenied) as exc:
        st.error(str(exc))
