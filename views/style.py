"""The page's own CSS: readable at phone width, and large type for a projector. No Streamlit here.

At phone width (640 px and less) the chart toolbar is hidden (it sat on the charts' titles;
the same buttons are one tap away on a desktop), chart titles get a size that fits, the tab
bar wraps instead of hiding tabs behind an arrow, and heatmaps keep a readable width and
scroll sideways inside their frame. ``LARGE_TYPE`` scales the page's type for a projector.
"""

from __future__ import annotations

HEATMAPS = ("attention_grid", "attention_head_map", "lens_map", "neuron_map", "feature_map", "compare_heads",
            "patch_resid", "patch_attn", "patch_mlp", "patch_heads")  # the charts' keys (``views.content``)


def _selector(suffix: str = "") -> str:
    """The heatmaps' containers (``suffix``: a part of them), as one CSS selector list."""
    return ", ".join(f".st-key-{key}{suffix}" for key in HEATMAPS)


PHONE_CSS = f"""<style>
@media (max-width: 640px) {{
  .modebar-container {{ display: none !important; }}
  .js-plotly-plot .gtitle {{ font-size: 14px !important; }}
  [data-testid="stTabs"] [role="tablist"] {{ flex-wrap: wrap !important; row-gap: 0.25rem; }}
  {_selector()} {{ overflow-x: auto; }}
  {_selector(" > div")} {{ min-width: 520px; }}
}}
</style>"""

LARGE_TYPE = """<style>
html { font-size: 22px; }
.stMarkdown p, .stMarkdown li, [data-testid="stText"] { font-size: 1.15rem !important; }
</style>"""

__all__ = ["LARGE_TYPE", "PHONE_CSS"]
