"""`peekflow dora-semantics`: DORA's own evaluation, the EA distance of the output units against WordNet."""

from __future__ import annotations

from peekflow.cli import add_settings_argument, stage_main

HELP = """DORA's evaluation (Bykov et al. 2023): the Mantel test between the extreme-activation distance of a
model's output units -- one per class, from DORA's signal file of its output layer -- and the WordNet 3.0 distance
of their classes (--synsets: the model's results/semantics/<model>/synsets.csv, in unit order). Units whose s-AMS did
not raise them are left out (listed). --settings: permutations, seed. Writes --out (dora_wordnet.json)."""


def add_arguments(p) -> None:
    from peekflow.semantics.settings import SemanticsSettings

    p.add_argument("--signals", required=True, help="DORA's dora_signals.h5 of the output layer")
    p.add_argument("--synsets", required=True, help="synsets.csv of the model's classes, in unit order")
    add_settings_argument(p, SemanticsSettings)
    p.add_argument("--out", required=True, help="dora_wordnet.json to write")


def run(args) -> None:
    import logging

    from peekflow.io import write_json
    from peekflow.semantics.judgements import judge_dora
    from peekflow.semantics.settings import SemanticsSettings
    from peekflow.settings import parse_settings

    s = parse_settings(SemanticsSettings, args.settings, "--settings")
    report = judge_dora(args.signals, args.synsets, s.permutations, s.seed, s.wordnet)
    report["settings"] = {key: getattr(s, key) for key in SemanticsSettings.TESTS}
    write_json(args.out, report)
    logging.getLogger("peekflow").info("%s: Mantel r %.3f, p %.3g over %d units (%d left out)", args.out,
                                       report["mantel_r"], report["mantel_p"], len(report["units"]),
                                       len(report["left_out"]))


if __name__ == "__main__":
    stage_main(__name__)
