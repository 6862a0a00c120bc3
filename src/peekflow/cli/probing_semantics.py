"""`peekflow probing-semantics`: PEEK probing judged against WordNet."""

from __future__ import annotations

from peekflow.cli import add_settings_argument, stage_main

HELP = """Judge a PEEK probing (similarity.csv, probing.json) against WordNet 3.0: the accuracy when a unit's named
class shares the true class's hypernym at depth d (a curve over d, for the best and the Hungarian match), the mean
WordNet distance between named and true class, each with the chance level of a random naming, and the Mantel test of
the probing similarity against Wu-Palmer similarity over pairs of units (--settings: permutations, seed). --synsets:
the probe's results/semantics/<probe>/synsets.csv, which maps its (the known) classes. Writes --out-json
(semantics.json) and --out-png (the accuracy curve)."""


def add_arguments(p) -> None:
    from peekflow.semantics.settings import SemanticsSettings

    p.add_argument("--similarity", required=True, help="the probing's similarity.csv (units x known classes)")
    p.add_argument("--probing", required=True, help="the probing's probing.json (each unit's true class and matches)")
    p.add_argument("--synsets", required=True, help="synsets.csv of the known classes (the probe model's)")
    add_settings_argument(p, SemanticsSettings)
    p.add_argument("--out-json", required=True)
    p.add_argument("--out-png", required=True)


def run(args) -> None:
    import logging

    from peekflow.io import write_json
    from peekflow.semantics.judgements import judge_probing, plot_probing_judgement
    from peekflow.semantics.settings import SemanticsSettings
    from peekflow.settings import parse_settings

    s = parse_settings(SemanticsSettings, args.settings, "--settings")
    report = judge_probing(args.similarity, args.probing, args.synsets, s.permutations, s.seed, s.wordnet)
    report["settings"] = {key: getattr(s, key) for key in SemanticsSettings.TESTS}
    write_json(args.out_json, report)
    plot_probing_judgement(args.out_png, report, title=f"PEEK probing of {report['model']} against WordNet")
    logging.getLogger("peekflow").info(
        "%s: Mantel r %.3f, p %.3g; mean distance %.2f (chance %.2f); accuracy by depth %s (chance %s)",
        args.out_json, report["mantel_r"], report["mantel_p"], report["mean_distance"], report["chance_mean_distance"],
        [round(a, 3) for a in report["accuracy_by_depth"]], [round(a, 3) for a in report["chance_accuracy_by_depth"]])


if __name__ == "__main__":
    stage_main(__name__)
