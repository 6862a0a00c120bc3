# Class prototypes of a model (DeepDream, DeepInversion) and how well they carry their class.


rule synthesize_prototypes:
    input:
        checkpoint=lambda w: model_checkpoint(w.model),
    output:
        prototypes="results/prototypes/{model}/{proto}.h5",
        grid="results/prototypes/{model}/{proto}.png",
    log:
        "logs/prototypes/{model}/{proto}.log",
    benchmark:
        "results/benchmarks/synthesize_prototypes/{model}/{proto}.tsv"
    threads: config["prototypes"]["threads"]
    params:
        command=lambda w: PROTOTYPE_COMMANDS[w.proto],
        model=lambda w: model_spec(w.model),
        settings=lambda w: prototype_settings(w.proto),
    shell:
        "peekflow {params.command} --model {params.model:q} --checkpoint {input.checkpoint:q}"
        " --settings {params.settings:q} --threads {threads}"
        " --out {output.prototypes} --grid {output.grid} > {log} 2>&1"


rule evaluate_prototypes:
    input:
        prototypes="results/prototypes/{model}/{proto}.h5",
        checkpoint=lambda w: model_checkpoint(w.model),
        probe_checkpoint=lambda w: model_checkpoint(config["probe_model"]),
    output:
        quality="results/prototypes/{model}/{proto}_quality.json",
    log:
        "logs/prototypes/{model}/{proto}_quality.log",
    benchmark:
        "results/benchmarks/evaluate_prototypes/{model}/{proto}.tsv"
    threads: config["prototypes"]["threads"]
    params:
        model=lambda w: model_spec(w.model),
        probe_model=lambda w: model_spec(config["probe_model"]),
        device=config["device"],
    shell:
        "peekflow quality --prototypes {input.prototypes} --model {params.model:q} --checkpoint {input.checkpoint:q}"
        " --probe-model {params.probe_model:q} --probe-checkpoint {input.probe_checkpoint:q}"
        " --device {params.device} --threads {threads} --out {output.quality} > {log} 2>&1"
