"""Readable strings for token ids, whatever the tokenizer's internal alphabet.

Byte-level BPE (GPT-2, Llama 3, Qwen) stores bytes as printable stand-ins ("Ġ" for a
space); SentencePiece (Llama 2, Gemma) writes "▁" for a space and "<0xE5>" for raw bytes.
A token holding only part of a multi-byte character shows its bytes as ``<0xE5>``.
"""

from __future__ import annotations

import codecs
import json
import unicodedata
import weakref
from functools import lru_cache

from transformers import PreTrainedTokenizerBase


def _hex_bytes(error: UnicodeDecodeError) -> tuple[str, int]:
    return "".join(f"<0x{b:02X}>" for b in error.object[error.start:error.end]), error.end


codecs.register_error("xray_hex", _hex_bytes)


@lru_cache(maxsize=1)
def byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes-to-printable-characters table."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


_decoders: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> its decoder types


def _decoder_types(tokenizer: PreTrainedTokenizerBase) -> frozenset[str]:
    """The types of the tokenizer's decoders, read once per tokenizer.

    Reading them serialises the whole tokenizer to JSON (2 ms for the demo model's, tens of
    milliseconds for a 150k vocabulary), and every call of ``token_strings`` needs them.
    """
    try:
        return _decoders[tokenizer]
    except (KeyError, TypeError):
        pass
    backend = getattr(tokenizer, "backend_tokenizer", None)
    found: set[str] = set()
    if backend is not None:
        decoder = json.loads(backend.to_str()).get("decoder") or {}
        found = {decoder.get("type", "")}
        found.update(d.get("type", "") for d in decoder.get("decoders", []) or [])
    try:
        _decoders[tokenizer] = frozenset(found)
    except TypeError:  # a tokenizer that cannot be weakly referenced: read it each time
        pass
    return frozenset(found)


def token_strings(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> list[str]:
    """One readable string per id, spaces and newlines kept as they are in the text."""
    pieces = tokenizer.convert_ids_to_tokens(ids)
    special = set(tokenizer.all_special_tokens)
    byte_level = "ByteLevel" in _decoder_types(tokenizer)
    table = byte_decoder()
    out = []
    for token_id, piece in zip(ids, pieces, strict=True):
        if piece is None:  # a row of the embedding the tokenizer never produces
            out.append(f"[id {token_id}]")
        elif piece in special:
            out.append(piece)
        elif byte_level and all(ch in table for ch in piece):
            out.append(bytes(table[ch] for ch in piece).decode("utf-8", errors="xray_hex"))
        elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            byte = int(piece[3:5], 16)
            out.append(chr(byte) if byte < 0x80 else piece)
        else:
            out.append(piece.replace("▁", " "))
    return out


WHITESPACE = {"\n": "↵", "\t": "⇥", "\r": "␍"}


def visible(token: str) -> str:
    """The token as a reader should see it: newlines, tabs and invisible characters shown.

    Format characters (zero-width joiners, right-to-left overrides) and control
    characters would silently reorder or hide a label, so they become ``<U+202E>``.
    """
    out = []
    for ch in token:
        if ch in WHITESPACE:
            out.append(WHITESPACE[ch])
        elif unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs", "Zl", "Zp"):
            out.append(f"<U+{ord(ch):04X}>")
        else:
            out.append(ch)
    text = "".join(out)
    return text if text.strip() else "␣" * len(text) if text else "∅"


SPACE_MARK = "␣"


def label(token: str) -> str:
    """A token standing alone (a list, a chart, a sentence): ``visible``, a leading space shown as ␣.

    " Rome" starts a word and "Rome" continues one; shown plainly both read "Rome". The
    page explains the mark once, above the views.
    """
    text = visible(token)
    return SPACE_MARK + text[1:] if text.startswith(" ") and text.strip() else text


def quoted(token: str) -> str:
    """A token in quotes for a sentence, e.g. ' Paris' (raw text, not HTML)."""
    return "'" + label(token) + "'"
