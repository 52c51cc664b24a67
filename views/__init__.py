"""Streamlit views and the pure figure, HTML and caption builders they draw with."""
