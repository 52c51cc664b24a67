"""A script for the page itself: text with a lone surrogate must never reach Streamlit's websocket.

JavaScript strings may hold half of a surrogate pair (pasted from broken text, or typed by
an input method mid-character). Streamlit sends widget values as protobuf, which needs
valid UTF-8: the server then fails to parse the whole message ("String field had bad
UTF-8"), the run silently never happens, and every later click resends it. This frame's
script (same origin as the page) replaces any lone surrogate in a text box with U+FFFD as
it is typed, before Streamlit's own input handlers read the value. Nothing else is touched.
"""

from __future__ import annotations

SURROGATE_GUARD = """<!doctype html><html><body><script>
(() => {
  const doc = window.parent && window.parent.document;
  if (!doc || doc.__xraySurrogateGuard) return;
  doc.__xraySurrogateGuard = true;
  const lone = /[\\uD800-\\uDBFF](?![\\uDC00-\\uDFFF])|(?<![\\uD800-\\uDBFF])[\\uDC00-\\uDFFF]/g;
  doc.addEventListener("input", (event) => {
    const box = event.target;
    if (!box || typeof box.value !== "string" || !lone.test(box.value)) return;
    lone.lastIndex = 0;
    const setter = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(box), "value").set;
    setter.call(box, box.value.replace(lone, "\\uFFFD"));
  }, true);
})();
</script></body></html>"""
