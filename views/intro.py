"""How every view opens: a sentence from the numbers, an explanation, an honest caveat."""

from __future__ import annotations

import streamlit as st

from views.display import md_escape


def intro(sentence: str | None, explain: str, caveat: str) -> None:
    """Draw a view's opening; ``sentence`` is plain text (escaped here), ``explain`` markdown."""
    if sentence:
        st.markdown(f"**{md_escape(sentence)}**")
    with st.expander("What am I looking at?"):
        st.markdown(explain)
    st.caption(caveat)
