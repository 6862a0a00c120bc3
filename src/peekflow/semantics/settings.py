"""The `semantics:` block of the workflow config: where WordNet 3.0 is, how classes map to its synsets, and the Mantel
tests' permutations. A config with the block maps the classes of every target and of the probe model
(results/semantics/<model>/), judges PEEK probing against WordNet where probing runs, and DORA's output units where
labels.dora runs; a config without it asks for none of this and needs no WordNet."""

from __future__ import annotations

from dataclasses import dataclass

from peekflow.settings import Settings, setting


@dataclass
class SemanticsSettings(Settings):
    wordnet: str | None = setting(None, "a folder of the WordNet 3.0 database files (data.noun, index.noun, ...); "
                                        "null: Debian's wordnet-base (/usr/share/wordnet), else nltk's data")
    synsets: dict = setting({}, "class name -> WordNet 3.0 noun synset (e.g. circle: circle.n.01, or a wnid); a "
                                "class whose name is a wnid (ImageNet's folders) needs none, every other class one")
    permutations: int = setting(999, "relabellings of the Mantel tests (p = (count + 1) / (permutations + 1); "
                                     "every relabelling instead where n! is not larger)", minimum=1)
    seed: int = setting(0, "seed of the Mantel tests' relabellings")
    output_layer: str = setting("fc", "the target's output layer, one unit per class: where labels.dora is "
                                      "configured, DORA also runs on it and its units' EA distance is set against "
                                      "their WordNet distance")

    # the keys each command reads (the rules pass only these, so a change reruns only what it concerns)
    MAPPING = ("wordnet", "synsets")
    TESTS = ("wordnet", "permutations", "seed")
