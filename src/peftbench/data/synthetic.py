"""A generated sentiment data set for the offline demo: deterministic, seedable, and not trivial.

Labels depend on structure, not on single words: negation flips a clause ("not good"), a contrast
("X, but Y") takes the polarity of its second clause, intensifiers add noise words. A clause
introduced by "although" never decides. The eval set holds combinations never seen in training:
adjectives that training only shows plainly appear negated or contrasted in eval, some subjects
and adjectives occur only in eval. So a bag-of-words model
cannot score 100%, and methods that adapt more of the network do differ.
"""

from __future__ import annotations

import random
from pathlib import Path

POS = ["good", "great", "wonderful", "excellent", "delightful", "charming", "brilliant", "enjoyable",
       "superb", "lovely", "impressive", "moving", "pleasant", "solid", "fun", "beautiful"]
NEG = ["bad", "terrible", "awful", "boring", "dull", "disappointing", "poor", "weak", "tedious",
       "mediocre", "clumsy", "bland", "annoying", "messy", "forgettable", "ugly"]
SUBJECTS = ["the movie", "the plot", "the acting", "the soundtrack", "the ending", "the dialogue",
            "the food", "the service", "the room", "the staff", "the camera", "the battery",
            "the book", "the sequel", "the game", "the concert", "the script", "the pacing"]
HELD_OUT_SUBJECTS = ["the finale", "the director's cut", "the dessert", "the screen"]
# Adjectives that never occur in training: eval needs what the pretrained model knows of them.
UNSEEN_POS = ["sublime", "captivating", "stellar", "heartwarming", "gripping", "flawless"]
UNSEEN_NEG = ["atrocious", "lifeless", "insufferable", "shoddy", "grating", "dreadful"]
INTENSIFIERS = ["very", "really", "extremely", "truly", "quite", "remarkably", "incredibly", "rather"]
NEGATIONS = ["not", "never", "hardly", "not at all"]


def _clause(rng: random.Random, subj: str, adj: str, negate: bool) -> str:
    verb = rng.choice(["was", "is", "felt", "seemed"])
    inten = rng.choice(INTENSIFIERS) + " " if rng.random() < 0.4 else ""
    if negate:
        neg = rng.choice(NEGATIONS)
        if neg == "not at all":
            return f"{subj} {verb} not {inten}{adj} at all"
        return f"{subj} {verb} {neg} {inten}{adj}"
    return f"{subj} {verb} {inten}{adj}"


def _example(rng: random.Random, adjs: tuple[list[str], list[str]], plain_only: set[str],
             subjects: list[str], eval_mode: bool) -> tuple[str, int]:
    pos, neg = adjs

    def pick(allow_hard: bool) -> tuple[str, int]:
        label = rng.randint(0, 1)
        if eval_mode and rng.random() < 0.25:
            return rng.choice(UNSEEN_POS if label else UNSEEN_NEG), label
        pool = [a for a in (pos if label else neg) if allow_hard or a not in plain_only]
        return rng.choice(pool), label

    kind = rng.choices(["plain", "negated", "contrast", "although", "although_after", "both"],
                       [0.2, 0.25, 0.2, 0.1, 0.1, 0.15])[0]
    hard = eval_mode  # eval may use plain-only adjectives inside negations and contrasts
    s1, s2 = rng.sample(subjects, 2)
    if kind == "plain":
        adj, label = pick(True)
        return _clause(rng, s1, adj, False).capitalize() + ".", label
    if kind == "negated":
        adj, label = pick(hard)
        return _clause(rng, s1, adj, True).capitalize() + ".", 1 - label
    if kind == "although_after":  # "X, even though Y": the main clause X decides
        a1, l1 = pick(hard)
        a2, _ = pick(hard)
        n1 = rng.random() < 0.3
        conj = rng.choice(["although", "even though", "though"])
        first = _clause(rng, s1, a1, n1).capitalize()
        return f"{first}, {conj} {_clause(rng, s2, a2, rng.random() < 0.3)}.", (1 - l1) if n1 else l1
    if kind in ("contrast", "although"):
        a1, l1 = pick(hard)
        a2, l2 = pick(hard)
        n2 = rng.random() < 0.3
        second = _clause(rng, s2, a2, n2)
        final = (1 - l2) if n2 else l2
        if kind == "contrast":
            return f"{_clause(rng, s1, a1, False).capitalize()}, but {second}.", final
        return f"Although {_clause(rng, s1, a1, False)}, {second}.", final
    a1, label = pick(True)
    others = [a for a in (pos if label else neg) if a != a1]
    return f"{_clause(rng, s1, a1, False).capitalize()} and {rng.choice(others)}.", label


def generate(n_train: int = 2000, n_eval: int = 600, seed: int = 0) -> tuple[list[tuple[str, int]],
                                                                                   list[tuple[str, int]]]:
    """(train, eval) lists of (text, label); label 1 = positive."""
    rng = random.Random(seed)
    pos, neg = POS[:], NEG[:]
    rng.shuffle(pos)
    rng.shuffle(neg)
    plain_only = set(pos[:5] + neg[:5])  # seen in training only outside negation/contrast
    train = [_example(rng, (pos, neg), plain_only, SUBJECTS, False) for _ in range(n_train)]
    eval_rng = random.Random(seed + 1)
    eval_set = [_example(eval_rng, (pos, neg), plain_only, SUBJECTS + HELD_OUT_SUBJECTS, True)
                for _ in range(n_eval)]
    return train, eval_set


def write_csv(rows: list[tuple[str, int]], path: str | Path) -> Path:
    import csv
    import io

    from peftbench.records.io import atomic_write_text

    p = Path(path)
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["text", "label"])
    w.writerows(rows)
    atomic_write_text(p, buf.getvalue())  # a killed demo never leaves half a data file behind
    return p
