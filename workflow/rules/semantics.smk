# Class semantics (peekflow.semantics): the classes of every target and of the probe mapped to WordNet 3.0 noun
# synsets, with their class x class WordNet matrices; PEEK probing and DORA's output units judged against them. Asked
# for only where the config has a `semantics:` block; the checks before any job find WordNet and every class's synset.


rule map_class_semantics:
    input:
        checkpoint=lambda w: model_checkpoint(w.model),
    output:
        synsets="results/semantics/{model}/synsets.csv",
        distance="results/semantics/{model}/distance.csv",
        wup="results/semantics/{model}/wup.csv",
        lcs_depth="results/semantics/{model}/lcs_depth.csv",
        figure=report(
            "results/semantics/{model}/matrices.png",
            caption="../report/semantics_matrices.rst",
            category="7. Semantics",
            subcategory="{model}",
            labels={"figure": "WordNet matrices of the classes"},
        ),
    log:
        "logs/semantics/{model}.log",
    benchmark:
        "results/benchmarks/map_class_semantics/{model}.tsv"
    resources:
        **job_resources("map_class_semantics"),
    params:
        model=lambda w: model_spec(w.model),
        settings=lambda w: semantics_settings(SemanticsSettings.MAPPING),
        folder=lambda w, output: os.path.dirname(output.synsets),
    shell:
        "peekflow semantics --model {params.model:q} --classes-of {input.checkpoint:q}"
        " --settings {params.settings:q} --out {params.folder:q} > {log} 2>&1"


rule judge_probing_by_wordnet:
    input:
        similarity="results/probing/{model}/{probe}/similarity.csv",
        probing="results/probing/{model}/{probe}/probing.json",
        synsets="results/semantics/{probe}/synsets.csv",
    output:
        json="results/probing/{model}/{probe}/semantics.json",
        figure=report(
            "results/probing/{model}/{probe}/semantics.png",
            caption="../report/semantics_probing.rst",
            category="7. Semantics",
            subcategory="{model}",
            labels={"figure": "PEEK probing by {probe} against WordNet"},
        ),
    log:
        "logs/semantics/probing/{model}/{probe}.log",
    benchmark:
        "results/benchmarks/judge_probing_by_wordnet/{model}/{probe}.tsv"
    wildcard_constraints:
        probe="|".join(config["models"]),
    resources:
        **job_resources("judge_probing_by_wordnet"),
    params:
        settings=lambda w: semantics_settings(SemanticsSettings.TESTS),
    shell:
        "peekflow probing-semantics --similarity {input.similarity} --probing {input.probing}"
        " --synsets {input.synsets} --settings {params.settings:q}"
        " --out-json {output.json} --out-png {output.figure} > {log} 2>&1"


rule judge_dora_by_wordnet:
    input:
        signals="results/neurons/{model}/{layer}/dora_signals.h5",
        synsets="results/semantics/{model}/synsets.csv",
    output:
        json="results/neurons/{model}/{layer}/dora_wordnet.json",
    log:
        "logs/semantics/dora/{model}/{layer}.log",
    benchmark:
        "results/benchmarks/judge_dora_by_wordnet/{model}/{layer}.tsv"
    resources:
        **job_resources("judge_dora_by_wordnet"),
    params:
        settings=lambda w: semantics_settings(SemanticsSettings.TESTS),
    shell:
        "peekflow dora-semantics --signals {input.signals:q} --synsets {input.synsets:q}"
        " --settings {params.settings:q} --out {output.json:q} > {log} 2>&1"
