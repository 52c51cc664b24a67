"""A corrupt prompt for patching: the clean prompt with one word swapped for another of its kind.

Patching needs two prompts of the same length in tokens that differ in one detail. Given
any prompt, ``suggest_corrupt`` finds the last word that belongs to a group of
interchangeable words (countries, cities, first names, days, months, numbers, colours,
animals, family words, pronouns) and swaps it for the group's first other member that
keeps the prompt's token count, e.g. "The capital of France is" -> "... of Italy is". A
word in no group falls back to the last word of three letters or more swapped for a
common word of the same token count. Only the tokenizer runs: no model work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from backend.loading import LoadedModel

GROUPS = (
    ("France", "Italy", "Spain", "Germany", "Japan", "China", "Egypt", "Canada", "Brazil", "India", "Russia",
     "England", "Greece", "Mexico", "Peru", "Kenya", "Norway", "Poland", "Sweden", "Turkey"),
    ("Paris", "Rome", "Madrid", "Berlin", "Tokyo", "London", "Cairo", "Athens", "Moscow", "Lima", "Oslo"),
    ("John", "Mary", "Max", "Mia", "Tom", "Anna", "Sam", "Emma", "Ben", "Lucy", "Jack", "Kate", "Paul", "Sara"),
    ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
     "November", "December"),
    ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
    ("red", "blue", "green", "yellow", "black", "white", "brown", "pink"),
    ("cat", "dog", "bird", "fish", "horse", "cow", "mouse", "lion", "bear", "fox"),
    ("mother", "father", "sister", "brother", "aunt", "uncle", "son", "daughter"),
    ("he", "she", "He", "She", "his", "her", "His", "Her"),
    ("apple", "pear", "lemon", "cherry", "grape", "peach"),
    ("big", "small", "old", "new", "hot", "cold", "happy", "sad"),
)
FALLBACK = ("house", "river", "table", "garden", "window", "music", "paper", "water", "light", "stone", "road")
_WORD = re.compile(r"[A-Za-z]+|\d+")


@dataclass(frozen=True)
class Corruption:
    """A suggested corrupt prompt: ``prompt`` with ``original`` (at character ``start``) replaced by ``replacement``."""

    prompt: str
    original: str
    replacement: str
    start: int


def _swap(text: str, match: re.Match, word: str) -> str:
    return text[:match.start()] + word + text[match.end():]


def _candidates(word: str) -> tuple[str, ...]:
    if word.isdigit():
        value = int(word)
        return tuple(str(value + step) for step in (1, -1, 2, 3, 10) if value + step >= 0)
    for group in GROUPS:
        if word in group:
            return tuple(w for w in group if w != word)
    return ()


def suggest_corrupt(lm: LoadedModel, prompt: str) -> Corruption | None:
    """The clean ``prompt`` with one word of a kind swapped, the token count kept; None when no swap keeps it."""
    length = len(lm.tokenizer(prompt, add_special_tokens=True)["input_ids"])

    def same_length(text: str) -> bool:
        return len(lm.tokenizer(text, add_special_tokens=True)["input_ids"]) == length

    words = list(_WORD.finditer(prompt))
    for match in reversed(words):  # a word of a known kind, the last first (nearest the answer)
        for candidate in _candidates(match.group()):
            if same_length(text := _swap(prompt, match, candidate)):
                return Corruption(text, match.group(), candidate, match.start())
    for match in reversed(words):
        if len(match.group()) < 3:
            continue
        for candidate in FALLBACK:
            candidate = candidate.capitalize() if match.group()[0].isupper() else candidate
            if candidate.lower() != match.group().lower() and same_length(text := _swap(prompt, match, candidate)):
                return Corruption(text, match.group(), candidate, match.start())
    return None


__all__ = ["Corruption", "suggest_corrupt"]
