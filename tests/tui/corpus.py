"""A small synthetic TinyStories-like corpus the UI tests write and build tokenizers on."""

from __future__ import annotations

import random
from pathlib import Path

NAMES = ["Lily", "Tom", "Mia", "Ben", "Sue", "Max", "Anna", "Sam"]
ANIMALS = ["cat", "dog", "bird", "frog", "bunny", "duck"]
PLACES = ["park", "garden", "forest", "house", "beach", "school"]
THINGS = ["ball", "kite", "box", "cake", "book", "hat", "toy"]
FEELINGS = ["happy", "sad", "excited", "scared", "sleepy", "proud"]


def story(rng: random.Random) -> str:
    n, m = rng.sample(NAMES, 2)
    a, p, t, f = rng.choice(ANIMALS), rng.choice(PLACES), rng.choice(THINGS), rng.choice(FEELINGS)
    k = rng.randint(2, 9)
    return (f"Once upon a time, there was a little {a} named {n}. {n} liked to play in the {p}.\n"
            f"One day, {n} found a big {t} with {k} red dots. {n} felt {f}.\n"
            f"\"Can I play with your {t}?\" asked {m}. \"Yes!\" said {n}. They played all day.")


def write_corpus(path: Path, n_stories: int = 300, seed: int = 0) -> Path:
    rng = random.Random(seed)
    path.write_text("\n<|endoftext|>\n".join(story(rng) for _ in range(n_stories)) + "\n",
                    encoding="utf-8")
    return path


def write_big_corpus(path: Path, mbytes: float = 16.0, seed: int = 1) -> Path:
    """Many made-up words, so a large vocab is learnable and the build takes seconds
    (2 MB of distinct text, repeated: quick to write, slow enough to read and train on)."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(50_000)]
    docs, size = [], 0
    while size < 2e6:
        doc = " ".join(rng.choice(words) for _ in range(200)) + "."
        docs.append(doc)
        size += len(doc) + 16
    block = ("\n<|endoftext|>\n".join(docs) + "\n<|endoftext|>\n").encode("utf-8")
    path.write_bytes(block * max(1, round(mbytes * 1e6 / len(block))))
    return path
