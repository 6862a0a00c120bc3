"""WordNet matrices and the Mantel test of ImageNet's 1000 classes: peekflow.semantics vs. nltk's pairwise functions.

Baselines: nltk's `shortest_path_distance` and `wup_similarity` for every pair of classes (timed on `--pairs` random
pairs, scaled to all 499,500; values checked equal to peekflow's), and a Mantel test that permutes b with
`np.ix_` and calls scipy's `pearsonr` on the upper triangle once per permutation (timed on `--loop-permutations`,
scaled). peekflow: `class_semantics` (each synset's ancestors once, the matrices filled block by block; first call,
the ancestor cache empty) and `mantel`. Needs WordNet 3.0 (apt-get install wordnet-base).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
from scipy.stats import pearsonr

from peekflow.semantics.hierarchy import ancestors, class_semantics
from peekflow.semantics.mantel import mantel
from peekflow.semantics.wordnet import class_synsets, open_wordnet
from readme_section import command_line, write_section

README = Path(__file__).with_name("README.md")


def main() -> None:
    from timm.data import ImageNetInfo

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=5000, help="class pairs nltk is timed on")
    p.add_argument("--permutations", type=int, default=999, help="Mantel permutations")
    p.add_argument("--loop-permutations", type=int, default=20, help="permutations the plain Mantel loop is timed on")
    p.add_argument("--write-readme", action="store_true", help=f"replace this benchmark's section in {README.name}")
    args = p.parse_args()

    load = os.getloadavg()[0]
    start = time.process_time()
    wordnet = open_wordnet()
    synsets = class_synsets(wordnet, ImageNetInfo().label_names())
    t_open = time.process_time() - start
    k, all_pairs = len(synsets), len(synsets) * (len(synsets) - 1) // 2
    ancestors.cache_clear()
    start = time.process_time()
    sem = class_semantics(synsets)
    t_ours = time.process_time() - start
    pairs = np.random.default_rng(0).integers(0, k, (args.pairs, 2))
    start = time.process_time()
    reference = [(synsets[i].shortest_path_distance(synsets[j]), synsets[i].wup_similarity(synsets[j]))
                 for i, j in pairs]
    t_nltk = (time.process_time() - start) * all_pairs / args.pairs
    for (i, j), (distance, wup) in zip(pairs, reference):  # same values
        assert sem.distance[i, j] == distance and abs(sem.wup[i, j] - wup) < 1e-12

    iu = np.triu_indices(k, 1)
    rng = np.random.default_rng(0)
    start = time.process_time()
    for _ in range(args.loop_permutations):
        order = rng.permutation(k)
        pearsonr(-sem.distance[iu], sem.wup[np.ix_(order, order)][iu])
    t_loop = (time.process_time() - start) * args.permutations / args.loop_permutations
    start = time.process_time()
    result = mantel(-sem.distance, sem.wup, args.permutations)
    t_mantel = time.process_time() - start

    section = "\n".join([
        "## WordNet matrices and Mantel test, ImageNet's 1000 classes (`semantics_matrices.py`)", "",
        "Baselines: nltk's `shortest_path_distance` + `wup_similarity` per pair (values checked equal), and a Mantel "
        "loop of `np.ix_` + scipy's `pearsonr` per permutation; peekflow: `class_semantics` (ancestor cache empty) "
        "and `mantel`. CPU seconds, one core.", "",
        "| step | baseline, CPU s | peekflow, CPU s | speed-up |", "|---|---:|---:|---:|",
        f"| distance + Wu-Palmer, {all_pairs:,} pairs | {t_nltk:.1f} | {t_ours:.2f} | **{t_nltk / t_ours:.0f}x** |",
        f"| Mantel test, {args.permutations} permutations | {t_loop:.1f} | {t_mantel:.1f} | "
        f"**{t_loop / t_mantel:.1f}x** |", "",
        f"Setup: nltk timed on {args.pairs:,} random pairs, the Mantel loop on {args.loop_permutations} permutations, "
        f"both scaled; opening WordNet and mapping the 1000 wnids: {t_open:.1f} CPU s (once per process); Mantel r of "
        f"-distance vs. Wu-Palmer = {result.r:.3f}. numpy {np.__version__}, {platform.processor() or platform.machine()}"
        f", {os.cpu_count()} CPUs, load average {load:.1f} at the start.", "",
        command_line(),
    ])
    print(section)
    if args.write_readme:
        write_section("semantics_matrices", section)


if __name__ == "__main__":
    main()
