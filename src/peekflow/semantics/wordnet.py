"""WordNet 3.0: find the database files, open them with nltk's reader, map classes to noun synsets.

Where the files are looked for, in order: a folder given explicitly (the config key `semantics.wordnet`), Debian's
`wordnet-base` package (/usr/share/wordnet), nltk's own data path (`python -m nltk.downloader wordnet`). ImageNet's
class folder names (wnids, n + 8 digits) are WordNet 3.0 noun offsets, so only version 3.0 is accepted.

nltk is imported inside the functions: a config that asks for no semantics never imports it. The checks before any
job read the database files directly (`DatabaseFiles`, `open_for_checks`): they only ask whether a name or a wnid
exists, and nltk's reader reads every index (seconds, in every Snakemake run) before its first answer.
"""

from __future__ import annotations

import importlib.util
import io
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

WORDNET_KEY = "semantics.wordnet"
SYNSETS_KEY = "semantics.synsets"
DEBIAN_FOLDER = Path("/usr/share/wordnet")
WNID = re.compile(r"n(\d{8})")
# the 45 lexicographer files of WordNet 3.0 (lexnames(5WN)), in file-number order; Debian's wordnet-base does not ship
# the `lexnames` file that nltk's reader opens first
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body noun.cognition "
    "noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive noun.object "
    "noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation noun.shape "
    "noun.state noun.substance noun.time verb.body verb.change verb.cognition verb.communication verb.competition "
    "verb.consumption verb.contact verb.creation verb.emotion verb.motion verb.perception verb.possession "
    "verb.social verb.stative verb.weather adj.ppl"
).split()
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


class WordNetMissing(FileNotFoundError):
    """WordNet 3.0 (or nltk, its reader) is not installed; the message says how to install it."""


class SemanticsError(ValueError):
    """Classes that cannot be mapped to WordNet 3.0 noun synsets; `problems` lists every one, each with its key."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__(f"{len(problems)} problem(s) mapping classes to WordNet 3.0 noun synsets:\n"
                         + "\n".join(f"  {p}" for p in problems))


def install_hint(key: str = WORDNET_KEY) -> str:
    return ("install WordNet 3.0 with `apt-get install wordnet-base` (Debian/Ubuntu: the Princeton database files in "
            f"{DEBIAN_FOLDER}), or set {key} to a folder of the WordNet 3.0 database files (data.noun, index.noun, "
            "... : the dict/ folder of Princeton's WordNet-3.0.tar.gz), or run `python -m nltk.downloader wordnet`")


def _nltk_data_root():
    """nltk's own copy of WordNet (a folder or a zip member), or None."""
    import nltk

    try:
        return nltk.data.find("corpora/wordnet")
    except LookupError:
        return None


def find_wordnet(folder: str | Path | None = None, key: str = WORDNET_KEY):
    """The WordNet database to read: `folder` if given, else Debian's, else nltk's; WordNetMissing says how to
    install it."""
    if importlib.util.find_spec("nltk") is None:  # the semantics stages read WordNet with it
        raise WordNetMissing(f"{key}: semantics need nltk (its WordNet reader): pip install nltk")
    if folder is not None:
        folder = Path(folder).expanduser()
        if not (folder / "data.noun").is_file():
            raise WordNetMissing(f"{key}: {folder} holds no WordNet database (no data.noun): {install_hint(key)}")
        return folder.resolve()
    if (DEBIAN_FOLDER / "data.noun").is_file():
        return DEBIAN_FOLDER
    root = _nltk_data_root()
    if root is None:
        raise WordNetMissing(f"WordNet 3.0 is not installed (this config asks for semantics): {install_hint(key)}")
    return root


def _reader_class():
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class Reader(WordNetCorpusReader):
        def open(self, fileid):
            if fileid == "lexnames":
                try:
                    return super().open(fileid)
                except (OSError, LookupError):
                    return io.StringIO("".join(f"{i:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n"
                                               for i, name in enumerate(LEXNAMES)))
            return super().open(fileid)

        def map_wn(self, version="wordnet"):
            # nltk maps other versions onto its own downloaded 3.0 through index.sense; this one is 3.0 (checked)
            return None

    return Reader


_READERS: dict[str, object] = {}  # one reader per database: opening one reads its indexes (~2 s)


def _quiet_offset(wordnet, offset: int):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nltk warns before returning None for an offset that starts no synset
        return wordnet.synset_from_pos_and_offset("n", offset)


def open_wordnet(folder: str | Path | None = None, key: str = WORDNET_KEY):
    """nltk's WordNet reader over WordNet 3.0 (see find_wordnet), opened once per process and database."""
    import nltk

    root = find_wordnet(folder, key)
    name = str(root)
    if name not in _READERS:
        if isinstance(root, Path) and name not in [str(p) for p in nltk.data.path]:
            nltk.data.path.append(name)  # nltk reads files only below its data path
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "multilingual functions are not available": none are used
            wordnet = _reader_class()(name if isinstance(root, Path) else root, None)
        _check_version(wordnet, root, key)
        _READERS[name] = wordnet
    return _READERS[name]


@dataclass(frozen=True)
class Entry:
    """A synset as `DatabaseFiles` finds it: its part of speech and offset (what the checks need of it)."""

    _pos: str
    _offset: int

    def pos(self) -> str:
        return self._pos

    def offset(self) -> int:
        return self._offset


class DatabaseFiles:
    """WordNet's database files read directly, as wndb(5WN) describes them: a synset's offset is its byte offset in
    data.<pos>, where its line starts with that offset as 8 digits, and each line of index.<pos> is a lemma, its part
    of speech, the number of its synsets, ... and, last, their offsets in sense order. It answers the two questions of
    nltk's reader that class_synset_problems asks (synset_from_pos_and_offset, synset) with `Entry`s, reading only
    what each answer needs."""

    FILES = {"n": "noun", "v": "verb", "a": "adj", "s": "adj", "r": "adv"}

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._index: dict[str, bytes] = {}

    def get_version(self) -> str | None:
        """The version in data.adj's licence header (where nltk's reader reads it); None without one."""
        if not (self.folder / "data.adj").is_file():
            return None
        with open(self.folder / "data.adj", "rb") as f:
            for line in f:
                if not line.startswith(b"  "):
                    break
                found = re.search(rb"WordNet (\S+) Copyright", line)
                if found:
                    return found.group(1).decode()
        return None

    def synset_from_pos_and_offset(self, pos: str, offset: int) -> Entry | None:
        with open(self.folder / f"data.{self.FILES[pos]}", "rb") as f:
            f.seek(offset)
            fields = f.readline().split(maxsplit=3)
        if len(fields) < 3 or fields[0] != b"%08d" % offset:
            return None  # no synset starts there
        return Entry(fields[2].decode(), offset)

    def synset(self, name: str) -> Entry:
        """The synset `lemma.pos.NN`; ValueError where there is none."""
        try:
            lemma, pos, sense = name.lower().rsplit(".", 2)
            number = int(sense)
        except ValueError:
            raise ValueError(f"{name!r} is not of the form lemma.pos.NN") from None
        if pos not in self.FILES:
            raise ValueError(f"no part of speech {pos!r} (n, v, a, s or r)")
        index = self._index.get(pos)
        if index is None:
            index = self._index[pos] = b"\n" + (self.folder / f"index.{self.FILES[pos]}").read_bytes()
        start = index.find(b"\n%s %s " % (lemma.encode(), b"a" if pos == "s" else pos.encode()))
        if start < 0:
            raise ValueError(f"no lemma {lemma!r} with part of speech {pos!r}")
        fields = index[start + 1:index.index(b"\n", start + 1)].split()
        offsets = [int(o) for o in fields[-int(fields[2]):]]
        if not 1 <= number <= len(offsets):
            raise ValueError(f"lemma {lemma!r} with part of speech {pos!r} has {len(offsets)} sense(s), not {number}")
        entry = self.synset_from_pos_and_offset("a" if pos == "s" else pos, offsets[number - 1])
        if entry is None:
            raise ValueError(f"index.{self.FILES[pos]} points {name!r} at {offsets[number - 1]}, where no synset starts")
        return entry


def open_for_checks(folder: str | Path | None = None, key: str = WORDNET_KEY):
    """What the checks before any job ask (class_synset_problems): the database files read directly where WordNet is
    a folder (Debian's, or one given), else nltk's reader (its downloaded zip). Version 3.0 is checked as by
    open_wordnet."""
    root = find_wordnet(folder, key)
    if not isinstance(root, Path):  # nltk's copy: a folder, or a zip that nltk's reader reads
        if not Path(getattr(root, "path", "")).is_dir():
            return open_wordnet(folder, key)
        root = Path(root.path)
    files = DatabaseFiles(root)
    _check_version(files, root, key)
    return files


def _check_version(wordnet, root, key: str) -> None:
    """Version 3.0 by `wordnet`'s own reading (either reader): data.adj's header says so, and tench.n.01 is the
    synset at noun offset 1440764 (ImageNet's n01440764)."""
    try:
        named = synset_from_name(wordnet, "tench.n.01").offset() == 1440764
    except (ValueError, OSError):  # no such lemma or sense, or no index.noun
        named = False
    version = wordnet.get_version()
    if version != "3.0" or not named:
        raise WordNetMissing(f"{key}: the WordNet at {root} is version {version}, not 3.0 (ImageNet's wnids are "
                             f"WordNet 3.0 noun offsets: n01440764 must be tench.n.01): {install_hint(key)}")


def synset_from_wnid(wordnet, wnid: str):
    """The noun synset of an ImageNet-style wnid (n + 8-digit WordNet 3.0 noun offset); None if it names none."""
    match = WNID.fullmatch(wnid)
    return _quiet_offset(wordnet, int(match.group(1))) if match else None


def synset_from_name(wordnet, name: str):
    """The noun synset named `name` (e.g. circle.n.01) or by a wnid; ValueError saying why not."""
    nltk_reader = sys.modules.get("nltk.corpus.reader.wordnet")  # imported where `wordnet` is nltk's reader
    errors = (ValueError, nltk_reader.WordNetError) if nltk_reader else (ValueError,)
    if WNID.fullmatch(name):
        synset = synset_from_wnid(wordnet, name)
        if synset is None:
            raise ValueError(f"{name!r} is not a WordNet 3.0 noun offset")
        return synset
    try:
        synset = wordnet.synset(name)
    except errors as err:
        raise ValueError(f"{name!r} is not a WordNet 3.0 synset name (lemma.n.NN, e.g. circle.n.01): {err}") from None
    if synset.pos() != "n":
        raise ValueError(f"{name!r} is not a noun synset (distances are measured in the noun hierarchy)")
    return synset


def class_synset_problems(wordnet, classes: list[str], synsets_map: dict[str, str] | None = None,
                          map_key: str = SYNSETS_KEY, classes_key: str = "classes") -> tuple[list, list[str]]:
    """(synset or None per class, every problem): a class is mapped by `synsets_map` (class -> synset name or wnid,
    the config's `map_key`) where it has an entry, else by its name if that is a wnid (an ImageNet folder name).
    Problems name the key at fault: a map entry that is no noun synset, a map entry for no class, a wnid-shaped class
    name that is no WordNet 3.0 noun offset, a class that is neither mapped nor a wnid."""
    synsets_map = dict(synsets_map or {})
    synsets, problems = [], []
    for name in classes:
        synset = None
        if name in synsets_map:
            try:
                synset = synset_from_name(wordnet, str(synsets_map[name]))
            except ValueError as err:
                problems.append(f"{map_key}.{name}: {err}")
        elif WNID.fullmatch(name):
            synset = synset_from_wnid(wordnet, name)
            if synset is None:
                problems.append(f"{classes_key}: class folder {name!r} is not a WordNet 3.0 noun offset (map it in "
                                f"{map_key}.{name})")
        else:
            problems.append(f"{map_key}.{name}: class {name!r} has no synset: its name is not a wnid (n + 8-digit "
                            f"noun offset), so {map_key} must map it (e.g. {name}: {name}.n.01, if that sense fits)")
        synsets.append(synset)
    problems += [f"{map_key}.{key}: no class {key!r} among {classes_key}" for key in synsets_map if key not in classes]
    return synsets, problems


def class_synsets(wordnet, classes: list[str], synsets_map: dict[str, str] | None = None,
                  map_key: str = SYNSETS_KEY, classes_key: str = "classes") -> list:
    """The noun synset of every class (see class_synset_problems); SemanticsError lists every problem at once."""
    synsets, problems = class_synset_problems(wordnet, classes, synsets_map, map_key, classes_key)
    if problems:
        raise SemanticsError(problems)
    return synsets
