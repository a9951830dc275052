"""Browser components of the app (``st.components.v2``, inline HTML/CSS/JS, no build step)."""
