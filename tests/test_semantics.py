"""peekflow.semantics: WordNet 3.0 class synsets and matrices (checked against nltk's own pairwise functions), the
Mantel test (against every permutation enumerated), probing and DORA judged against WordNet (planted answers, chance
levels against enumeration).

The WordNet tests read the real database: Debian's wordnet-base (CI installs it) or nltk's copy; without one they are
skipped, saying so. The Mantel tests need no WordNet.
"""

from __future__ import annotations

import functools
import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from peekflow.semantics.mantel import mantel
from workflow import ROOT

# ---------------------------------------------------------------------------------------------------------- WordNet


@pytest.fixture
def wordnet():
    pytest.importorskip("nltk", reason="nltk (WordNet's reader) is not installed: pip install nltk")
    from peekflow.semantics.wordnet import WordNetMissing, open_wordnet

    try:
        return open_wordnet()
    except WordNetMissing as err:
        pytest.skip(f"WordNet 3.0 is not installed ({err})")


@functools.lru_cache(maxsize=None)
def imagenet_wnids() -> list[str]:
    from timm.data import ImageNetInfo

    return list(ImageNetInfo().label_names())


def test_wordnet_is_3_0_opened_once(wordnet):
    from peekflow.semantics.wordnet import open_wordnet, synset_from_name, synset_from_wnid

    assert open_wordnet() is wordnet and wordnet.get_version() == "3.0"
    assert synset_from_wnid(wordnet, "n01440764").name() == "tench.n.01"
    assert synset_from_name(wordnet, "n01440764") == synset_from_name(wordnet, "tench.n.01")
    assert synset_from_wnid(wordnet, "n01440765") is None  # no synset starts at that offset
    assert synset_from_wnid(wordnet, "tench") is None
    with pytest.raises(ValueError, match="not a noun synset"):
        synset_from_name(wordnet, "run.v.01")


def test_missing_wordnet_says_how_to_install(tmp_path, monkeypatch):
    pytest.importorskip("nltk")
    from peekflow.semantics import wordnet as wn

    with pytest.raises(wn.WordNetMissing, match=rf"my\.key: {tmp_path} holds no WordNet") as err:
        wn.find_wordnet(tmp_path, key="my.key")
    assert "apt-get install wordnet-base" in str(err.value) and "set my.key to a folder" in str(err.value)
    monkeypatch.setattr(wn, "DEBIAN_FOLDER", tmp_path / "absent")
    monkeypatch.setattr(wn, "_nltk_data_root", lambda: None)
    with pytest.raises(wn.WordNetMissing, match="WordNet 3.0 is not installed") as err:
        wn.find_wordnet()
    assert "apt-get install wordnet-base" in str(err.value) and "semantics.wordnet" in str(err.value)


def test_a_folder_given_is_read_and_must_hold_version_3_0(wordnet, tmp_path):
    import shutil

    from peekflow.semantics.wordnet import WordNetMissing, open_for_checks, open_wordnet

    source = Path(wordnet.root.path)
    for version, folder in (("3.0", tmp_path / "copy"), ("2.1", tmp_path / "old")):
        folder.mkdir()
        for name in ["data.noun", "data.verb", "data.adv", "index.noun", "index.verb", "index.adj", "index.adv",
                     "noun.exc", "verb.exc", "adj.exc", "adv.exc"]:  # no lexnames, as in Debian's wordnet-base
            shutil.copy(source / name, folder / name)
        text = (source / "data.adj").read_text(encoding="latin-1")
        (folder / "data.adj").write_text(text.replace("WordNet 3.0 Copyright", f"WordNet {version} Copyright", 1),
                                         encoding="latin-1")
    assert open_wordnet(tmp_path / "copy").synset("circle.n.01").definition().startswith("ellipse in which")
    assert open_for_checks(tmp_path / "copy").synset("circle.n.01").offset() == 13873502
    for opener in (open_wordnet, open_for_checks):
        with pytest.raises(WordNetMissing, match=r"semantics\.wordnet: the WordNet at .*old is version 2\.1, not "
                                                 r"3\.0"):
            opener(tmp_path / "old")
    (tmp_path / "bare").mkdir()  # data.noun alone: the checks before any job say what is missing, not a traceback
    shutil.copy(source / "data.noun", tmp_path / "bare" / "data.noun")
    with pytest.raises(WordNetMissing, match=r"the WordNet at .*bare is version None, not 3\.0"):
        open_for_checks(tmp_path / "bare")


def test_database_files_answer_as_nltks_reader(wordnet):
    """The direct reads of the checks before any job (DatabaseFiles) against nltk's reader: every sense of a seeded
    sample of lemmas of each part of speech, the sense after the last, wnids at synset offsets and next to them."""
    from peekflow.semantics.wordnet import DatabaseFiles, synset_from_name, synset_from_wnid

    files = DatabaseFiles(Path(wordnet.root.path))
    assert files.get_version() == wordnet.get_version() == "3.0"
    rng = np.random.default_rng(0)
    for pos, name in (("n", "noun"), ("v", "verb"), ("a", "adj"), ("r", "adv")):
        lemmas = [line.split()[0] for line in (Path(wordnet.root.path) / f"index.{name}").read_text().splitlines()
                  if not line.startswith("  ")]
        for lemma in rng.choice(lemmas, 300, replace=False):
            senses = wordnet._lemma_pos_offset_map[lemma][pos]  # the offsets nltk read from index.<pos>
            for number, offset in enumerate(senses, 1):
                mine = files.synset(f"{lemma}.{pos}.{number:02d}")
                theirs = wordnet.synset(f"{lemma}.{pos}.{number:02d}")
                assert (mine.offset(), mine.pos()) == (theirs.offset(), theirs.pos()) and mine.offset() == offset
            with pytest.raises(ValueError, match=f"has {len(senses)} sense"):
                files.synset(f"{lemma}.{pos}.{len(senses) + 1:02d}")
            if pos == "n":
                for wnid in (f"n{senses[0]:08d}", f"n{senses[0] + 1:08d}", f"n{senses[0] - 3:08d}"):
                    mine, theirs = synset_from_wnid(files, wnid), synset_from_wnid(wordnet, wnid)
                    assert (mine and mine.offset()) == (theirs and theirs.offset()), wnid
    for name in ("tench.n.01", "n01440764", "run.v.01", "nosuchlemma.n.01", "circle.q.01", "circle"):
        outcomes = []
        for reader in (files, wordnet):
            try:
                outcomes.append(synset_from_name(reader, name).offset())
            except ValueError as err:
                outcomes.append(str(err).split(":")[0])
        assert outcomes[0] == outcomes[1], name


def test_the_checks_before_any_job_read_wordnet_without_nltk(wordnet):
    """The config checks of every Snakemake run (preflight.semantics_problems) on the embedded default's semantics
    block import no nltk: its reader takes seconds to open."""
    code = ("import sys, yaml\n"
            "from peekflow.workflow.preflight import semantics_problems\n"
            "from peekflow.workflow import replicas\n"
            "from peekflow.workflow.config_checks import fill_defaults\n"
            "from peekflow.workflow.config_schema import workflow_schema\n"
            "config = yaml.safe_load(open('config/config.yaml'))\n"
            "fill_defaults(config, workflow_schema())\n"
            "config = replicas.expand(config)\n"
            "assert semantics_problems(config) == [], semantics_problems(config)\n"
            "assert not [m for m in sys.modules if m.startswith('nltk')], 'nltk imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]


def test_imagenet_wnids_are_wordnet_3_0_nouns(wordnet):
    from peekflow.semantics.wordnet import class_synsets

    wnids = imagenet_wnids()
    synsets = class_synsets(wordnet, wnids)
    assert len(wnids) == len(set(synsets)) == 1000
    assert all(s.pos() == "n" and f"n{s.offset():08d}" == wnid for s, wnid in zip(synsets, wnids))
    assert synsets[0].name() == "tench.n.01"


def test_class_synsets_names_every_problem_with_its_key(wordnet):
    from peekflow.semantics.wordnet import SemanticsError, class_synset_problems, class_synsets

    classes = ["circle", "n01440765", "n01440764", "square", "blob", "wave", "ring"]
    mapping = {"circle": "circle.n.99", "square": "square.n.01", "wave": "wave.v.01", "ring": "n13875392",
               "triangel": "triangle.n.01"}
    with pytest.raises(SemanticsError) as err:
        class_synsets(wordnet, classes, mapping, map_key="semantics.synsets", classes_key="models.m.classes")
    problems = err.value.problems
    assert len(problems) == 5 and str(err.value).startswith("5 problem(s)")
    assert problems[0].startswith("semantics.synsets.circle: 'circle.n.99' is not a WordNet 3.0 synset name")
    assert problems[1].startswith("models.m.classes: class folder 'n01440765' is not a WordNet 3.0 noun offset")
    assert problems[2].startswith("semantics.synsets.blob: class 'blob' has no synset")
    assert problems[3].startswith("semantics.synsets.wave: 'wave.v.01' is not a noun synset")
    assert problems[4] == "semantics.synsets.triangel: no class 'triangel' among models.m.classes"
    synsets, _ = class_synset_problems(wordnet, classes, mapping)
    assert [s and s.name() for s in synsets] == [None, None, "tench.n.01", "square.n.01", None, None, "ring.n.02"]


# -------------------------------------------------------------------------------------------------------- hierarchy


@functools.lru_cache(maxsize=None)
def imagenet_semantics():
    from peekflow.semantics.hierarchy import class_semantics
    from peekflow.semantics.wordnet import class_synsets, open_wordnet

    synsets = class_synsets(open_wordnet(), imagenet_wnids())
    return synsets, class_semantics(synsets)


def test_imagenet_matrices_equal_nltk_pair_for_pair(wordnet):
    synsets, sem = imagenet_semantics()
    assert sem.distance.shape == sem.wup.shape == sem.lcs_depth.shape == (1000, 1000)
    assert (sem.distance == sem.distance.T).all() and (sem.lcs_depth == sem.lcs_depth.T).all()
    assert (np.diag(sem.distance) == 0).all() and (sem.distance[~np.eye(1000, dtype=bool)] > 0).all()
    rng = np.random.default_rng(0)
    pairs = np.vstack([rng.integers(0, 1000, (1500, 2)), np.repeat(rng.integers(0, 1000, 50), 2).reshape(-1, 2),
                       [[151, 152], [152, 151], [151, 151]]])  # toy dogs: their lcs lies below a second parent
    for i, j in pairs:
        a, b = synsets[i], synsets[j]
        assert sem.distance[i, j] == a.shortest_path_distance(b)
        assert sem.wup[i, j] == pytest.approx(a.wup_similarity(b), abs=1e-12)
        subsumers = a.lowest_common_hypernyms(b, use_min_depth=True)
        assert sem.lcs_depth[i, j] == subsumers[0].min_depth()
        assert sem.subsumers[sem.lcs[i, j]] == (a if a in subsumers else subsumers[0]).name()


def test_nested_synsets_follow_nltk_tie_rules(wordnet):
    """Synsets that are ancestors of others (ties among subsumers, a synset's own lcs below a second parent: dog.n.01
    is 8 edges below the root through domestic_animal, canine.n.02 deeper): every ordered pair as nltk has it."""
    from peekflow.semantics.hierarchy import class_semantics

    names = ("entity.n.01 animal.n.01 dog.n.01 chihuahua.n.03 toy_dog.n.01 canine.n.02 domestic_animal.n.01 "
             "tench.n.01 fish.n.01 circle.n.01 shape.n.02 ellipse.n.01 person.n.01 chef.n.01 fireman.n.01").split()
    synsets = [wordnet.synset(n) for n in names]
    sem = class_semantics(synsets)
    for (i, a), (j, b) in itertools.product(enumerate(synsets), repeat=2):
        assert sem.distance[i, j] == a.shortest_path_distance(b)
        assert sem.wup[i, j] == pytest.approx(a.wup_similarity(b), abs=1e-12), (a, b)


def test_hypernym_at_depth_lies_on_a_shortest_root_path(wordnet):
    from peekflow.semantics.hierarchy import hypernym_at_depth, tree_order

    synsets, _ = imagenet_semantics()
    for s in synsets[::37]:
        shortest = [p for p in s.hypernym_paths() if len(p) == s.min_depth() + 1]
        for d in range(s.min_depth() + 1):
            assert hypernym_at_depth(s, d) in {p[d] for p in shortest}
        assert hypernym_at_depth(s, s.min_depth() + 3) == s
    tench = synsets[0]
    assert hypernym_at_depth(tench, 0).name() == "entity.n.01"
    assert hypernym_at_depth(tench, tench.min_depth() - 1).name() == "cyprinid.n.01"
    with pytest.raises(ValueError, match="depth must be >= 0"):
        hypernym_at_depth(tench, -1)
    # tench, chihuahua, goldfish, japanese spaniel: the fish together, the dogs together
    order = tree_order([synsets[i] for i in (0, 151, 1, 152)]).tolist()
    assert sorted(order) == [0, 1, 2, 3] and abs(order.index(0) - order.index(2)) == 1


# ----------------------------------------------------------------------------------------------------------- Mantel


def distance_matrix(points: np.ndarray) -> np.ndarray:
    return np.linalg.norm(points[:, None] - points[None], axis=-1)


def brute_force_p(a, b, alternative="two-sided", correlation=pearsonr, entries=None):
    """Share of ALL relabellings of b (rows and columns together) whose r is as extreme as the observed one."""
    n = len(a)
    entries = np.triu_indices(n, 1) if entries is None else entries
    r0 = correlation(a[entries], b[entries])[0]
    rs = np.array([correlation(a[entries], b[np.ix_(p, p)][entries])[0] for p in itertools.permutations(range(n))])
    value, threshold = {"two-sided": (np.abs(rs), abs(r0)), "greater": (rs, r0), "less": (-rs, -r0)}[alternative]
    return r0, float(np.mean(value >= threshold - 1e-12))


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_mantel_exact_equals_enumeration_of_all_permutations(alternative):
    rng = np.random.default_rng(1)
    points = rng.normal(size=(6, 2))
    a, b = distance_matrix(points), distance_matrix(points + rng.normal(size=(6, 2)))
    for method, correlation in (("pearson", pearsonr), ("spearman", spearmanr)):
        r0, p0 = brute_force_p(a, b, alternative, correlation)
        result = mantel(a, b, permutations=720, method=method, alternative=alternative)
        assert result.exact and result.permutations == 720 and result.entries == 15
        assert result.r == pytest.approx(r0, abs=1e-12) and result.p == pytest.approx(p0, abs=1e-12)


def test_mantel_sampled_p_converges_to_the_exact_one():
    rng = np.random.default_rng(2)
    points = rng.normal(size=(7, 2))
    a, b = distance_matrix(points), distance_matrix(points + 1.5 * rng.normal(size=(7, 2)))
    _, exact = brute_force_p(a, b)  # 5,040 relabellings
    result = mantel(a, b, permutations=4999, seed=3)
    assert not result.exact and result.permutations == 4999
    assert abs(result.p - exact) < 4 * np.sqrt(exact * (1 - exact) / 4999) + 1 / 5000
    assert mantel(a, b, permutations=4999, seed=3) == result  # seeded


def test_mantel_of_asymmetric_matrices_uses_every_off_diagonal_entry():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    r0, p0 = brute_force_p(a, b, entries=np.nonzero(~np.eye(6, dtype=bool)))
    result = mantel(a, b, permutations=720)
    assert result.entries == 30 and result.r == pytest.approx(r0, abs=1e-12) and result.p == pytest.approx(p0)


def test_mantel_finds_a_planted_correlation_and_not_an_absent_one():
    rng = np.random.default_rng(5)
    points = rng.normal(size=(40, 3))
    a = distance_matrix(points)
    related = mantel(a, distance_matrix(points + 0.3 * rng.normal(size=(40, 3))), permutations=999)
    assert related.r > 0.8 and related.p == pytest.approx(1 / 1000)
    unrelated = mantel(a, distance_matrix(rng.normal(size=(40, 3))), permutations=999)
    assert abs(unrelated.r) < 0.2 and unrelated.p > 0.05
    opposite = mantel(a, -a, permutations=999, alternative="greater")
    assert opposite.r == pytest.approx(-1) and opposite.p == 1.0


def test_mantel_rejects_bad_input():
    a = distance_matrix(np.arange(8.0)[:, None])
    with pytest.raises(ValueError, match="two square matrices of one size"):
        mantel(a, a[:7, :7])
    with pytest.raises(ValueError, match="all equal"):
        mantel(a, np.ones_like(a))
    with pytest.raises(ValueError, match="at least 3 objects"):
        mantel(a[:2, :2], a[:2, :2])
    with pytest.raises(ValueError, match="alternative one of"):
        mantel(a, a, alternative="bigger")


# ------------------------------------------------------------------------------------------------------- evaluation

FISH_AND_SHARKS = ["n01440764", "n01443537", "n01484850", "n01491361"]  # tench, goldfish, great white, tiger shark


def small_semantics(wordnet, wnids=FISH_AND_SHARKS):
    from peekflow.semantics.hierarchy import class_semantics
    from peekflow.semantics.wordnet import class_synsets

    synsets = class_synsets(wordnet, wnids)
    return synsets, class_semantics(synsets)


def test_probing_named_right_is_right_at_every_depth(wordnet):
    from peekflow.semantics.evaluation import accuracy_by_depth, chance_accuracy_by_depth, depths, mean_distance

    synsets, sem = small_semantics(wordnet)
    truth = np.array([3, 1, 0, 2, 1])
    d = depths(sem, truth)
    assert d.tolist() == list(range(max(s.min_depth() for s in synsets) + 1))
    assert accuracy_by_depth(sem, truth, truth).tolist() == [1.0] * len(d)
    assert mean_distance(sem, truth, truth) == 0.0
    chance = chance_accuracy_by_depth(sem, truth)
    assert chance[0] == 1.0 and (np.diff(chance) <= 0).all() and chance[-1] < 1


def test_probing_named_a_sibling_is_right_down_to_the_parent(wordnet):
    from peekflow.semantics.evaluation import accuracy_by_depth, mean_distance

    synsets, sem = small_semantics(wordnet)
    tench, goldfish = synsets[0], synsets[1]
    parent = tench.lowest_common_hypernyms(goldfish)[0]
    assert parent.name() == "cyprinid.n.01" and parent.min_depth() == tench.min_depth() - 1 == 15
    curve = accuracy_by_depth(sem, named=[1, 0], truth=[0, 1])  # each fish named by the other
    assert curve[:16].tolist() == [1.0] * 16 and curve[16] == 0.0
    assert mean_distance(sem, [1, 0], [0, 1]) == 2.0
    # the sharks share shark.n.01 (depth 13) only: the four units are right down to 13, the fish down to 15
    curve = accuracy_by_depth(sem, named=[1, 0, 3, 2], truth=[0, 1, 2, 3])
    assert curve.tolist() == [1.0] * 14 + [0.5] * 2 + [0.0]


def test_chance_levels_equal_the_mean_over_every_naming(wordnet):
    """Exact chance against enumeration: all K^U independent namings, and all K!/(K-U)! one-to-one ones."""
    from peekflow.semantics.evaluation import (accuracy_by_depth, chance_accuracy_by_depth, chance_mean_distance,
                                               mean_distance)

    _, sem = small_semantics(wordnet, FISH_AND_SHARKS + ["n02085620"])  # and a chihuahua: K = 5
    truth = np.array([0, 2, 4])
    for scheme, namings in (("independent", itertools.product(range(5), repeat=3)),
                            ("permutation", itertools.permutations(range(5), 3))):
        namings = [np.array(n) for n in namings]
        curves = np.mean([accuracy_by_depth(sem, n, truth) for n in namings], axis=0)
        np.testing.assert_allclose(chance_accuracy_by_depth(sem, truth, scheme=scheme), curves, atol=1e-12)
        distances = np.mean([mean_distance(sem, n, truth) for n in namings])
        assert chance_mean_distance(sem, truth, scheme=scheme) == pytest.approx(distances, abs=1e-12)
    with pytest.raises(ValueError, match="one-to-one assignment needs at most 5 units"):
        chance_mean_distance(sem, np.zeros(6, int), scheme="permutation")


def test_probing_mantel_finds_similarity_that_follows_wordnet(wordnet):
    from peekflow.semantics.evaluation import probing_mantel, probing_report

    _, sem = imagenet_semantics()
    rng = np.random.default_rng(6)
    truth = rng.choice(1000, 60, replace=False)
    similarity = sem.wup[truth] + 0.05 * rng.normal(size=(60, 1000))  # [units, classes]
    result = probing_mantel(sem, similarity, truth, permutations=199)
    assert result.r > 0.8 and result.p == pytest.approx(1 / 200) and result.entries == 60 * 59
    noise = probing_mantel(sem, rng.normal(size=(60, 1000)), truth, permutations=199)
    assert abs(noise.r) < 0.1 and noise.p > 0.05
    with pytest.raises(ValueError, match=r"must be \[units, classes\] = \(60, 1000\)"):
        probing_mantel(sem, similarity[:, :10], truth)
    named = truth.copy()
    named[0] = truth[1]
    report = probing_report(sem, named, truth)
    assert report["accuracy_by_depth"][0] == 1.0 and report["accuracy_by_depth"][-1] == pytest.approx(59 / 60)
    assert report["mean_distance"] == sem.distance[truth[1], truth[0]] / 60
    assert report["chance_mean_distance"] > 10 and len(report["depths"]) == len(report["chance_accuracy_by_depth"])


def test_dora_mantel_reads_the_wordnet_distance_of_the_units(wordnet):
    from peekflow.neurons.dora import ea_distance
    from peekflow.semantics.evaluation import dora_mantel
    from peekflow.semantics.hierarchy import ancestors

    _, sem = imagenet_semantics()
    synsets, sem = imagenet_semantics()
    units = np.arange(0, 1000, 25)[::-1]  # 40 output units, in an order of their own
    # representations that share features where the classes share hypernyms: indicators of each class's ancestors
    column = {name: c for c, name in enumerate(sem.subsumers)}
    representations = np.zeros((len(units), len(column)))
    for row, unit in enumerate(units):
        representations[row, [column[a.name()] for a in ancestors(synsets[unit])]] = 1.0
    result = dora_mantel(sem, ea_distance(representations), units, permutations=199)
    assert result.r > 0.7 and result.p == pytest.approx(1 / 200) and result.n == 40
    mislabelled = dora_mantel(sem, ea_distance(representations), np.random.default_rng(7).permutation(units),
                              permutations=199)
    assert abs(mislabelled.r) < 0.2 and mislabelled.p > 0.05


# ------------------------------------------------------------------------------------------- shapes and the files


def test_every_generated_shape_has_a_synset(wordnet):
    from peekflow.data.shapes import DEFAULT_ID_SHAPES, DEFAULT_NEAR_OOD_SHAPES, SHAPE_NAMES
    from peekflow.semantics.shapes import LOOSE, SHAPE_SYNSETS
    from peekflow.semantics.wordnet import class_synsets

    assert set(SHAPE_SYNSETS) == set(SHAPE_NAMES) >= set(DEFAULT_ID_SHAPES) | set(DEFAULT_NEAR_OOD_SHAPES)
    assert set(LOOSE) < set(SHAPE_SYNSETS)
    synsets = class_synsets(wordnet, list(SHAPE_SYNSETS), SHAPE_SYNSETS)
    close = {name: s.lexname() for name, s in zip(SHAPE_SYNSETS, synsets) if name not in LOOSE}
    assert close.pop("arrow") == "noun.communication" and set(close.values()) == {"noun.shape"}


def test_write_class_semantics(wordnet, tmp_path):
    import pandas as pd

    from peekflow.data.shapes import DEFAULT_ID_SHAPES
    from peekflow.semantics.files import write_class_semantics
    from peekflow.semantics.hierarchy import class_semantics
    from peekflow.semantics.shapes import SHAPE_SYNSETS
    from peekflow.semantics.wordnet import class_synsets

    classes = list(DEFAULT_ID_SHAPES)
    synsets = class_synsets(wordnet, classes, {c: SHAPE_SYNSETS[c] for c in classes})
    sem = class_semantics(synsets)
    write_class_semantics(tmp_path, classes, synsets, sem)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["distance.csv", "lcs_depth.csv", "matrices.png",
                                                         "synsets.csv", "wup.csv"]
    table = pd.read_csv(tmp_path / "synsets.csv")
    assert table["class"].tolist() == classes and table["synset"][0] == "circle.n.01"
    distance = pd.read_csv(tmp_path / "distance.csv", index_col="class")
    assert distance.index.tolist() == distance.columns.tolist() == classes
    np.testing.assert_array_equal(distance.to_numpy(), sem.distance)
    np.testing.assert_allclose(pd.read_csv(tmp_path / "wup.csv", index_col="class").to_numpy(), sem.wup, rtol=1e-5)


def test_embedded_default_maps_its_shapes_as_the_library_does():
    """config/config.yaml states the synsets of its in-distribution shapes explicitly: those of SHAPE_SYNSETS."""
    import yaml

    from peekflow.semantics.shapes import SHAPE_SYNSETS
    from workflow import ROOT

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    classes = config["generate"]["sets"]["shapes"]["classes"]
    assert config["semantics"]["synsets"] == {c: SHAPE_SYNSETS[c] for c in classes}
