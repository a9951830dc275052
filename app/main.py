"""FRACTAL Studio web app: the one entry file. Sets up the page, the shared stylesheet, who is signed in and the
dataset picker, then routes with ``st.navigation`` to the thin pages in ``app/views``.

Without a session only the sign-in page exists (no other page can be reached, and no data is read); after
signing in, the navigation holds the pages the user's role allows, and each page checks the role again.

(The pages are not in ``app/pages`` on purpose: Streamlit still treats a ``pages/`` folder next to the entry
file as a legacy multipage app, which runs a page without this file when its URL is opened directly.)

Run with ``fractal serve`` (which also starts the worker) or ``streamlit run app/web.py`` (this file plus the
routes that set the session cookie, :mod:`app.web`).
"""

from __future__ import annotations

import streamlit as st

from app import auth, render, state
from db.accounts import has_role

st.set_page_config(page_title="FRACTAL Studio", page_icon=":material/scatter_plot:", layout="wide")
# The stylesheet for highlighted responses: fixed classes only, emitted once per run.
st.html(render.CSS)

# (page file, title, icon, the least role that may open it)
PAGES = [
    ("views/review.py", "Review", ":material/rate_review:", "annotator"),
    ("views/gold.py", "Gold queue", ":material/workspace_premium:", "annotator"),
    ("views/pairs.py", "Pairs", ":material/compare:", "annotator"),
    ("views/agreement.py", "Agreement", ":material/groups:", "reviewer"),
    ("views/adjudicate.py", "Adjudicate", ":material/gavel:", "reviewer"),
    ("views/data.py", "Data", ":material/upload_file:", "admin"),
    ("views/train.py", "Train", ":material/model_training:", "admin"),
    ("views/models.py", "Models", ":material/insights:", "admin"),
    ("views/export.py", "Export", ":material/download:", "admin"),
    ("views/team.py", "Team", ":material/assignment_ind:", "admin"),
    ("views/users.py", "Users", ":material/group:", "admin"),
]

if not auth.client_allowed():
    st.error("This app runs without sign-in and serves this machine only.")
    st.stop()
try:
    user = auth.current_user()
except Exception as exc:  # a bad store must still show a readable page, not a stack trace
    st.error("Cannot open the database: " + render.md_escape(exc))
    st.stop()
auth.sync_cookie()

if user is None:
    st.navigation([st.Page("views/signin.py", title="Sign in", icon=":material/login:", default=True)]).run()
    st.stop()
if user.must_change_password:
    st.navigation([st.Page("views/password.py", title="Password", icon=":material/key:", default=True)]).run()
    st.stop()


def _review_link() -> None:
    """``/review`` opens Review (the default page, served at the root URL) with the link's query string."""
    st.switch_page(routes[0], query_params=st.query_params.to_dict())


# Every page is routed, so a link to one the role may not open reaches the page's own check and says "not
# allowed" (instead of "Page not found"); the navigation lists only the pages the role may open. Review is the
# default page at the root URL (so whatever the first run after signing in shows is not cut short by a switch),
# and its own name reaches it too.
review_path, review_title, review_icon, _ = PAGES[0]
# The default page is served at the root URL but reserves a name of its own; "review" is left to the alias.
routes = [st.Page(review_path, title=review_title, icon=review_icon, default=True, url_path="review-page")]
routes += [
    st.Page(path, title=title, icon=icon, visibility="visible" if has_role(user, role) else "hidden")
    for path, title, icon, role in PAGES[1:]
]
page = st.navigation(
    [*routes, st.Page(_review_link, title=review_title, url_path="review", visibility="hidden")]
)
state.warm_imports()

with st.sidebar:
    st.title("FRACTAL Studio")
    try:
        state.dataset_picker()
    except Exception as exc:  # a bad store must still show a readable page, not a stack trace
        st.error("Cannot open the database: " + render.md_escape(exc))
        st.stop()
    if auth.auth_enabled():
        # st.text never interprets markup: the name is user text.
        st.text(f"Signed in as {user.name} ({user.role})")
        if st.button("Sign out", key="sign_out", icon=":material/logout:"):
            auth.sign_out()
            st.rerun()
    else:
        state.annotator_picker()

page.run()
