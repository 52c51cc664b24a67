"""A script for the page itself: text with a lone surrogate must never reach Streamlit's websocket.

JavaScript strings may hold half of a surrogate pair (pasted from broken text, or typed by
an input method mid-character). Streamlit sends widget values as protobuf, which needs
valid UTF-8: the server then fails to parse the whole message ("String field had bad
UTF-8"), the run silently never happens, and every later click resends it. This frame's
script (same origin as the page) replaces any lone surrogate in a text box with U+FFFD as
it is typed, before Streamlit's own input handlers read the value.

The same script brings the answers into view when the page asks (after an example or "Look
inside", so that a phone shows the result without scrolling): it watches for a
``data-xray-scroll`` marker it has not seen and scrolls it to the top of the window.
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
  // keep the newest marker at the top while the page below it is still being drawn (at first
  // there is not enough page under it to scroll that far), until the reader scrolls themselves
  const seen = new Set();
  let target = null, until = 0;
  const scroll = () => {
    for (const mark of doc.querySelectorAll("[data-xray-scroll]")) {
      const key = mark.getAttribute("data-xray-scroll");
      if (!seen.has(key)) {
        seen.add(key);
        target = mark;
        mark.style.scrollMarginTop = "4.5rem";  // below Streamlit's fixed top bar
        until = Date.now() + 6000;
      }
    }
    if (target && Date.now() < until && target.isConnected) target.scrollIntoView({block: "start"});
  };
  for (const kind of ["wheel", "touchstart", "keydown"]) {
    doc.addEventListener(kind, () => { target = null; }, {passive: true, capture: true});
  }
  new MutationObserver(scroll).observe(doc.body, {childList: true, subtree: true});
})();
</script></body></html>"""
