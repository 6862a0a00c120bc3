"""Class x class WordNet matrices in the noun hierarchy, and the hypernym of a class at a given depth.

The graph: hypernym and instance-hypernym edges (is-a, is-an-instance-of), as nltk walks it. depth(s) = nltk's
min_depth: edges on the shortest hypernym path from s up to the root entity.n.01. Pair for pair these equal nltk's:
- distance(a, b): edges on the shortest path up from a to a common ancestor c and down to b,
  min over c of up(a, c) + up(b, c) (nltk's shortest_path_distance, PEEK's "shortest path between synsets");
- lowest common subsumer lcs(a, b): the common ancestor-or-self of greatest depth; ties go to a itself, else to the
  first by name (nltk's lowest_common_hypernyms with use_min_depth=True, as its wup_similarity picks it);
- Wu-Palmer wup(a, b) = 2 (D + 1) / (distance(a, l) + distance(b, l) + 2 (D + 1)), l = lcs(a, b), D = l's max_depth
  (nltk's wup_similarity(a, b)). Like nltk's, wup is asymmetric where a tie among subsumers involves a or b, and
  below 1 on the diagonal for a synset with a second, deeper hypernym path (its own lcs is then that deeper parent).

Speed: nltk walks both synsets' hypernym graphs for every pair. Here each synset's ancestors are found once (cached
for the process) and the matrices are filled one ancestor at a time: the block of classes below ancestor c takes
min(distance, up(i, c) + up(j, c)). ImageNet's 1000 classes: see benchmarks/README.md.
"""

from __future__ import annotations

import functools
from collections import deque
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np


@functools.lru_cache(maxsize=None)
def ancestors(synset) -> MappingProxyType:
    """Every ancestor-or-self of `synset` -> edges up to it (breadth first over hypernyms and instance hypernyms)."""
    up = {}
    queue = deque([(synset, 0)])
    while queue:
        node, edges = queue.popleft()
        if node not in up:
            up[node] = edges
            queue.extend((parent, edges + 1) for parent in node.hypernyms() + node.instance_hypernyms())
    return MappingProxyType(up)


def path_distance(a, b) -> int:
    """Edges on the shortest path from a up to a common ancestor and down to b (nltk's shortest_path_distance)."""
    if a == b:
        return 0
    up_a, up_b = ancestors(a), ancestors(b)
    common = [edges + up_b[c] for c, edges in up_a.items() if c in up_b]
    if not common:
        raise ValueError(f"{a.name()} and {b.name()} share no ancestor (not two noun synsets?)")
    return min(common)


def hypernym_at_depth(synset, depth: int):
    """PEEK's coarse label: the hypernym of `synset` at `depth` on a shortest path to the root (ties: first by name);
    the synset itself where it is no deeper than `depth`."""
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    own = synset.min_depth()
    if depth >= own:
        return synset
    # on a shortest root path, the node at depth k is own - k edges up and has min_depth k
    return min((c for c, edges in ancestors(synset).items() if edges == own - depth and c.min_depth() == depth),
               key=lambda c: c.name())


def tree_order(synsets) -> np.ndarray:
    """Class indices in depth-first order of the hierarchy (by the names of the coarse labels from the root down), so
    that classes under one hypernym sit together in a figure."""
    paths = [[hypernym_at_depth(s, d).name() for d in range(s.min_depth() + 1)] for s in synsets]
    return np.array(sorted(range(len(synsets)), key=lambda i: paths[i]), dtype=np.int64)


@dataclass
class ClassSemantics:
    synsets: list[str]  # [K] synset name per class
    depth: np.ndarray  # [K] min_depth per class
    distance: np.ndarray  # [K, K] shortest path (edges), symmetric, 0 on the diagonal
    wup: np.ndarray  # [K, K] Wu-Palmer similarity in (0, 1]
    lcs_depth: np.ndarray  # [K, K] depth of the lowest common subsumer, symmetric
    lcs: np.ndarray  # [K, K] the lowest common subsumer: index into `subsumers`
    subsumers: list[str]  # every ancestor of the classes, by depth


def class_semantics(synsets) -> ClassSemantics:
    """The WordNet matrices of K classes given as noun synsets (see the module docstring)."""
    ups = [ancestors(s) for s in synsets]
    # by depth, ties by name descending: each block overwrites `lcs`, so the deepest, first-named ancestor stays
    union = sorted(sorted({c for up in ups for c in up}, key=lambda c: c.name(), reverse=True),
                   key=lambda c: c.min_depth())
    index = {c: n for n, c in enumerate(union)}
    members: dict = {c: ([], []) for c in union}
    for i, up in enumerate(ups):
        for c, edges in up.items():
            members[c][0].append(i)
            members[c][1].append(edges)
    k = len(synsets)
    distance = np.full((k, k), np.iinfo(np.int64).max, dtype=np.int64)
    lcs = np.zeros((k, k), dtype=np.int64)
    for n, c in enumerate(union):
        rows, edges = np.asarray(members[c][0]), np.asarray(members[c][1])
        block = np.ix_(rows, rows)
        distance[block] = np.minimum(distance[block], edges[:, None] + edges[None, :])
        lcs[block] = n
    depth_of = np.array([c.min_depth() for c in union])
    # nltk's tie rule: a synset that is itself among the deepest common ancestors is the subsumer of its row
    classes_of: dict = {}
    for i, s in enumerate(synsets):
        classes_of.setdefault(s, []).append(i)
    for j, up in enumerate(ups):
        for c in up:
            for i in classes_of.get(c, ()):
                if depth_of[index[c]] == depth_of[lcs[i, j]]:
                    lcs[i, j] = index[c]
    # edges from each class up to each of its ancestors, measured as nltk measures them (path_distance)
    up_to = np.full((k, len(union)), -1, dtype=np.int64)
    for i, (s, up) in enumerate(zip(synsets, ups)):
        for c in up:
            up_to[i, index[c]] = path_distance(s, c)
    top = np.array([c.max_depth() for c in union])[lcs] + 1.0
    rows = np.arange(k)
    wup = 2 * top / (up_to[rows[:, None], lcs] + up_to[rows[None, :], lcs] + 2 * top)
    return ClassSemantics([s.name() for s in synsets], np.array([s.min_depth() for s in synsets]), distance, wup,
                          depth_of[lcs], lcs, [c.name() for c in union])
