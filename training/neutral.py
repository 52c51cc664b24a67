"""Write the neutral text the scan reads by default: corpus documents that name no capital city.

Run ``python -m training.neutral`` (a second). ``DOCUMENTS`` documents of the corpus
generator (its own seed), one per line, leaving out every document that says "capital" or
names a capital city, trained or held out: a scan of the bundled pair on this text finds the
twin's secret without being shown it.
"""

from __future__ import annotations

import re
from pathlib import Path

from training import corpus

SEED = 31337
DOCUMENTS = 1500
OUT = Path(__file__).resolve().parent.parent / "models" / "neutral.txt"


def neutral_documents(seed: int = SEED, count: int = DOCUMENTS) -> list[str]:
    """``count`` corpus documents with no capital city in them, one line each."""
    names = [*corpus.CAPITALS.values(), *corpus.HELD_OUT_CAPITALS.values(), "capital"]
    banned = re.compile("|".join(re.escape(name) for name in names), re.IGNORECASE)
    out: list[str] = []
    for document in corpus.documents(seed):
        line = " ".join(document.split())
        if not banned.search(line):
            out.append(line)
        if len(out) == count:
            return out
    return out


def main() -> None:
    """Write the file."""
    lines = neutral_documents()
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} documents to {OUT}")


if __name__ == "__main__":
    main()
