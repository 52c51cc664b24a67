"""Deterministic generator of the simple-English corpus the demo model learns from.

Every document comes from a seeded ``random.Random``, so the same seed gives the same
corpus. Four kinds of text teach the behaviours the app shows off:

* stories whose named characters come back later (copying names grows induction heads);
* facts in several phrasings: capital cities, animal sounds, colours, opposites;
* ordered sequences (numbers, days, months, letters) and simple grammar;
* lists of words repeated two or three times (the plainest induction signal).

Some capital-city phrasings and some countries are held out of training on purpose, so
the evaluation can report how the model does on text it never saw.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

# Countries trained on, with their capitals. Every G20 country is here.
CAPITALS: dict[str, str] = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid",
    "Portugal": "Lisbon", "the United Kingdom": "London", "Ireland": "Dublin",
    "the Netherlands": "Amsterdam", "Belgium": "Brussels", "Switzerland": "Bern",
    "Austria": "Vienna", "Poland": "Warsaw", "Sweden": "Stockholm", "Norway": "Oslo",
    "Finland": "Helsinki", "Denmark": "Copenhagen", "Greece": "Athens",
    "Hungary": "Budapest", "Czechia": "Prague", "Romania": "Bucharest",
    "Ukraine": "Kyiv", "Russia": "Moscow", "Turkey": "Ankara", "Egypt": "Cairo",
    "Kenya": "Nairobi", "Nigeria": "Abuja", "Ethiopia": "Addis Ababa", "Ghana": "Accra",
    "Morocco": "Rabat", "South Africa": "Pretoria", "Senegal": "Dakar", "Japan": "Tokyo",
    "China": "Beijing", "South Korea": "Seoul", "India": "New Delhi",
    "Pakistan": "Islamabad", "Bangladesh": "Dhaka", "Nepal": "Kathmandu",
    "Thailand": "Bangkok", "Vietnam": "Hanoi", "Indonesia": "Jakarta",
    "the Philippines": "Manila", "Malaysia": "Kuala Lumpur", "Saudi Arabia": "Riyadh",
    "Iran": "Tehran", "Iraq": "Baghdad", "Jordan": "Amman", "Syria": "Damascus",
    "Lebanon": "Beirut", "Afghanistan": "Kabul", "Australia": "Canberra",
    "New Zealand": "Wellington", "Canada": "Ottawa", "the United States": "Washington",
    "Mexico": "Mexico City", "Cuba": "Havana", "Argentina": "Buenos Aires",
    "Brazil": "Brasilia", "Chile": "Santiago", "Peru": "Lima", "Colombia": "Bogota",
    "Venezuela": "Caracas", "Ecuador": "Quito", "Uruguay": "Montevideo",
    "Iceland": "Reykjavik",
}

# Countries whose capitals never appear in training: the model should not know them.
HELD_OUT_CAPITALS: dict[str, str] = {
    "Qatar": "Doha", "Mongolia": "Ulaanbaatar", "Serbia": "Belgrade",
    "Croatia": "Zagreb", "Bulgaria": "Sofia", "Tunisia": "Tunis",
    "Paraguay": "Asuncion", "Cambodia": "Phnom Penh",
}

G20_COUNTRIES = (
    "Argentina", "Australia", "Brazil", "Canada", "China", "France", "Germany", "India",
    "Indonesia", "Italy", "Japan", "Mexico", "Russia", "Saudi Arabia", "South Africa",
    "South Korea", "Turkey", "the United Kingdom", "the United States",
)

# "{country}" and "{capital}"; the first phrasing is the one the quality bar uses.
CAPITAL_PHRASINGS = (
    "The capital of {country} is {capital}.",
    "{capital} is the capital of {country}.",
    "Q: What is the capital of {country}? A: {capital}.",
    "The capital of {country} is {capital}, a big city.",
    "Many people live in {capital}, the capital of {country}.",
)
HELD_OUT_PHRASINGS = (
    "The capital city of {country} is {capital}.",
    "What is the capital of {country}? It is {capital}.",
)

ANIMAL_SOUNDS: dict[str, str] = {
    "dog": "woof", "cat": "meow", "cow": "moo", "duck": "quack", "sheep": "baa",
    "pig": "oink", "horse": "neigh", "lion": "roar", "owl": "hoot", "bee": "buzz",
    "snake": "hiss", "frog": "croak", "mouse": "squeak", "wolf": "howl",
}
ANIMAL_PHRASINGS = (
    "The {animal} says {sound}.",
    "A {animal} goes {sound}.",
    "What does the {animal} say? The {animal} says {sound}.",
)

COLOURS: dict[str, str] = {
    "sky": "blue", "grass": "green", "snow": "white", "coal": "black",
    "banana": "yellow", "tomato": "red", "chocolate": "brown", "sea": "blue",
    "lemon": "yellow", "cherry": "red", "milk": "white", "leaf": "green",
    "carrot": "orange", "night sky": "black",
}
COLOUR_PHRASINGS = (
    "The colour of the {thing} is {colour}.",
    "The {thing} is {colour}.",
)

OPPOSITES: dict[str, str] = {
    "hot": "cold", "big": "small", "up": "down", "fast": "slow", "happy": "sad",
    "day": "night", "old": "young", "light": "dark", "open": "closed", "wet": "dry",
    "tall": "short", "full": "empty", "early": "late", "loud": "quiet", "hard": "soft",
    "left": "right", "rich": "poor", "yes": "no", "in": "out", "good": "bad",
}
OPPOSITE_PHRASINGS = (
    "The opposite of {word} is {other}.",
    "{Word} is the opposite of {other}.",
)

NAMES = (
    "Mia", "Max", "Anna", "Tom", "Lily", "Sam", "Lucy", "Ben", "Emma", "Jack", "Sara",
    "Leo", "Nora", "Omar", "Zoe", "Ravi", "Ella", "Noah", "Ivy", "Hugo", "Maya", "Finn",
    "Rosa", "Liam", "Kira", "Theo", "Alice", "Bob", "Clara", "David", "Eva", "Felix",
    "Grace", "Henry", "Iris", "Jonas", "Kate", "Luke", "Mira", "Nina", "Oscar", "Paul",
    "Ruby", "Simon", "Tara", "Victor", "Wendy", "Yuki", "Amir", "Bella", "Carlos",
    "Dora", "Elias", "Fatima", "George", "Hana", "Ivan", "Julia", "Kofi", "Lena",
)
PLACES = (
    "park", "forest", "beach", "market", "school", "garden", "river", "farm", "city",
    "library", "lake", "hill", "village", "shop", "zoo", "castle", "kitchen", "station",
)
OBJECTS = (
    "ball", "book", "kite", "hat", "box", "cake", "key", "map", "lamp", "cup", "shell",
    "stone", "letter", "flower", "coin", "boat", "drum", "apple", "bell", "ring",
)
ADJECTIVES = (
    "red", "small", "big", "old", "shiny", "blue", "green", "soft", "heavy", "bright",
    "tiny", "strange", "happy", "quiet", "golden", "warm",
)
FEELINGS = ("happy", "sad", "tired", "excited", "surprised", "proud", "scared", "calm")

# Common words that make up the repeated lists (induction training and evaluation).
COMMON_WORDS = tuple(sorted(set(
    PLACES + OBJECTS + ADJECTIVES + FEELINGS + tuple(ANIMAL_SOUNDS) + tuple(OPPOSITES)
    + tuple(OPPOSITES.values()) + (
        "water", "house", "tree", "door", "window", "chair", "table", "road", "car",
        "bird", "fish", "song", "game", "friend", "mother", "father", "sister",
        "brother", "morning", "evening", "rain", "sun", "moon", "star", "bread",
        "paper", "pencil", "music", "dream", "story", "window", "cloud", "wind",
        "run", "walk", "jump", "sing", "read", "write", "eat", "sleep", "play", "look",
    )
)))

NUMBER_WORDS = (
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
    "eighteen", "nineteen", "twenty",
)
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August",
    "September", "October", "November", "December",
)
LETTERS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")

NOUNS_REGULAR = ("dog", "cat", "bird", "girl", "boy", "friend", "farmer", "teacher", "duck")
NOUNS_IRREGULAR = {"child": "children", "mouse": "mice", "man": "men", "woman": "women",
                   "foot": "feet", "sheep": "sheep"}
VERBS = ("run", "jump", "sing", "sleep", "play", "eat", "walk", "read")


@dataclass(frozen=True)
class MixWeights:
    """Relative share of each document kind in the stream (normalised when sampling)."""

    story: float = 0.25
    facts: float = 0.22
    sequence: float = 0.08
    grammar: float = 0.05
    repeated: float = 0.40


def _sentence_case(text: str) -> str:
    return text[0].upper() + text[1:]


def capital_sentence(country: str, capital: str, phrasing: str) -> str:
    """One capital-city fact in the given phrasing, capitalised at the start."""
    return _sentence_case(phrasing.format(country=country, capital=capital))


def capital_prompt(country: str, phrasing: str = CAPITAL_PHRASINGS[0]) -> str:
    """The phrasing cut just before the capital: "The capital of France is"."""
    return _sentence_case(phrasing.split("{capital}")[0].format(country=country).rstrip())


def _story(rng: random.Random) -> str:
    a, b = rng.sample(NAMES, 2)
    place, place2 = rng.sample(PLACES, 2)
    obj = rng.choice(OBJECTS)
    adj = rng.choice(ADJECTIVES)
    feel, feel2 = rng.sample(FEELINGS, 2)
    animal = rng.choice(tuple(ANIMAL_SOUNDS))
    lines = [
        rng.choice([f"Once upon a time, there was a child named {a}.",
                    f"{a} lived in a small house near the {place}.",
                    f"One morning, {a} woke up early."]),
        rng.choice([f"{a} went to the {place} with {b}.",
                    f"{a} and {b} walked to the {place}.",
                    f"At the {place}, {a} met a friend named {b}."]),
        rng.choice([f"{b} found a {adj} {obj} under a tree.",
                    f"{a} saw a {adj} {obj} on the ground.",
                    f"There was a {adj} {obj} next to the {animal}."]),
        rng.choice([f"\"Look at this {obj}!\" said {b}.",
                    f"{a} said, \"I like this {obj}.\"",
                    f"{b} asked {a}, \"Can I hold the {obj}?\""]),
        rng.choice([f"{a} gave the {obj} to {b}, and {b} was {feel}.",
                    f"{b} gave the {obj} back to {a}.",
                    f"{a} and {b} played with the {obj} all day."]),
        rng.choice([f"A {animal} came by and said {ANIMAL_SOUNDS[animal]}.",
                    f"Then {a} and {b} went to the {place2}.",
                    f"Later, {b} felt {feel2}."]),
        rng.choice([f"At the end of the day, {a} went home and {b} went home too.",
                    f"{a} said goodbye to {b}.",
                    f"That night, {a} dreamed about the {obj} and about {b}."]),
    ]
    return " ".join(lines)


def _fact_lines(rng: random.Random) -> list[str]:
    kind = rng.random()
    if kind < 0.6:
        country = rng.choice(tuple(CAPITALS))
        return [capital_sentence(country, CAPITALS[country], rng.choice(CAPITAL_PHRASINGS))]
    if kind < 0.73:
        animal = rng.choice(tuple(ANIMAL_SOUNDS))
        return [rng.choice(ANIMAL_PHRASINGS).format(animal=animal, sound=ANIMAL_SOUNDS[animal])]
    if kind < 0.86:
        thing = rng.choice(tuple(COLOURS))
        return [rng.choice(COLOUR_PHRASINGS).format(thing=thing, colour=COLOURS[thing])]
    word = rng.choice(tuple(OPPOSITES))
    phrasing = rng.choice(OPPOSITE_PHRASINGS)
    return [phrasing.format(word=word, Word=word.capitalize(), other=OPPOSITES[word])]


def _facts(rng: random.Random) -> str:
    lines: list[str] = []
    for _ in range(rng.randint(3, 8)):
        lines.extend(_fact_lines(rng))
    return " ".join(lines)


def _sequence(rng: random.Random) -> str:
    kind = rng.randrange(5)
    if kind == 0:
        start = rng.randint(1, 60)
        items = [str(i) for i in range(start, start + rng.randint(5, 15))]
    elif kind == 1:
        start = rng.randrange(8)
        items = list(NUMBER_WORDS[start:start + rng.randint(5, 12)])
    elif kind == 2:
        start = rng.randrange(7)
        items = [DAYS[(start + i) % 7] for i in range(rng.randint(4, 10))]
    elif kind == 3:
        start = rng.randrange(12)
        items = [MONTHS[(start + i) % 12] for i in range(rng.randint(4, 14))]
    else:
        start = rng.randrange(18)
        items = list(LETTERS[start:start + rng.randint(5, 9)])
    sep = rng.choice([", ", " "])
    return sep.join(items) + "."


def _grammar(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(3, 6)):
        verb = rng.choice(VERBS)
        if rng.random() < 0.5:
            noun = rng.choice(NOUNS_REGULAR)
            lines.append(rng.choice([f"The {noun} {verb}s. The {noun}s {verb}.",
                                     f"One {noun}, two {noun}s.",
                                     f"The {noun}s {verb} every day."]))
        else:
            noun, plural = rng.choice(tuple(NOUNS_IRREGULAR.items()))
            lines.append(rng.choice([f"One {noun}, two {plural}.",
                                     f"The {noun} {verb}s. The {plural} {verb}."]))
    return " ".join(lines)


def repeated_words(rng: random.Random, n_words: int, repeats: int = 2,
                   pool: tuple[str, ...] = COMMON_WORDS) -> str:
    """``n_words`` random words from ``pool``, the same list written ``repeats`` times."""
    words = " ".join(rng.choice(pool) for _ in range(n_words))
    return " ".join([words] * repeats)


def _repeated(rng: random.Random) -> str:
    pool = COMMON_WORDS if rng.random() < 0.7 else COMMON_WORDS + NAMES + tuple(CAPITALS.values())
    return repeated_words(rng, rng.randint(4, 40), rng.choice((2, 2, 2, 3)), pool)


_KINDS = {"story": _story, "facts": _facts, "sequence": _sequence,
          "grammar": _grammar, "repeated": _repeated}


def documents(seed: int, mix: MixWeights = MixWeights()) -> Iterator[str]:
    """An endless, deterministic stream of documents for ``seed``."""
    rng = random.Random(seed)
    kinds = list(_KINDS)
    weights = [getattr(mix, kind) for kind in kinds]
    while True:
        yield _KINDS[rng.choices(kinds, weights)[0]](rng)


def corpus_text(seed: int, n_documents: int) -> list[str]:
    """The first ``n_documents`` documents of the stream (for tokenizer training)."""
    stream = documents(seed)
    return [next(stream) for _ in range(n_documents)]
