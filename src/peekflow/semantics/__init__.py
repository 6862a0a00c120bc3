"""Semantics: classes mapped to WordNet 3.0 noun synsets, class x class WordNet distances, PEEK probing and DORA's
neuron distances judged against them (accuracy by hypernym depth, Mantel tests)."""
