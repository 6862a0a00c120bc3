"""peekflow.semantics: WordNet 3.0 class synsets and matrices (checked against nltk's own pairwise functions), the
Mantel test (against every permutation enumerated), probing and DORA judged against WordNet (planted answers, chance
levels against enumeration).

The WordNet tests read the real database: Debian's wordnet-base (CI installs it) or nltk's copy; without one they are
skipped, saying so. The Mantel tests need no WordNet.
"""

from __future__ import annotations

import functools

import pytest

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
    from pathlib import Path

    from peekflow.semantics.wordnet import WordNetMissing, open_wordnet

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
    with pytest.raises(WordNetMissing, match=r"semantics\.wordnet: the WordNet at .*old is version 2\.1, not 3\.0"):
        open_wordnet(tmp_path / "old")


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
