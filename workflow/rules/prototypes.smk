# Class prototypes of a model (DeepDream, DeepInversion), caricatures of real images, and how well they carry
# their class.


rule synthesize_prototypes:
    input:
        checkpoint=lambda w: model_checkpoint(w.model),
    output:
        prototypes=prototype_file("{model}", "{proto}"),
        grid=report(
            "results/prototypes/{model}/{proto}.png",
            caption="../report/prototypes.rst",
            category="2. Prototypes",
            subcategory="{model}",
            labels={"method": "{proto}"},
        ),
    log:
        "logs/prototypes/{model}/{proto}.log",
    benchmark:
        "results/benchmarks/synthesize_prototypes/{model}/{proto}.tsv"
    wildcard_constraints:
        proto=sharded_pattern("prototypes", model_made_prototypes(), sharded=False),
    threads: config["prototypes"]["threads"]
    resources:
        **job_resources("synthesize_prototypes"),
    params:
        device=config["device"],
        command=lambda w: prototype_command(w.proto),
        model=lambda w: model_spec(w.model),
        settings=lambda w: stage_settings(f"prototypes.methods.{w.proto}"),
    shell:
        "peekflow {params.command} --model {params.model:q} --checkpoint {input.checkpoint:q} --device {params.device}"
        " --settings {params.settings:q} --threads {threads}"
        " --out {output.prototypes} --grid {output.grid} > {log} 2>&1"


# prototypes.shards: one job per contiguous range of batches; a killed shard leaves <file>.partial/ (not an output,
# so Snakemake keeps it) and its rerun continues after its finished batches.
rule synthesize_prototype_shard:
    input:
        checkpoint=lambda w: model_checkpoint(w.model),
    output:
        prototypes=temp("results/prototypes/{model}/{proto}/shard_{shard}_of_{shards}.h5"),
    log:
        "logs/prototypes/{model}/{proto}/shard_{shard}_of_{shards}.log",
    benchmark:
        "results/benchmarks/synthesize_prototype_shard/{model}/{proto}/shard_{shard}_of_{shards}.tsv"
    wildcard_constraints:
        proto=sharded_pattern("prototypes", model_made_prototypes(), sharded=True),
        shard=r"\d+",
        shards=r"\d+",
    threads: config["prototypes"]["threads"]
    resources:
        **job_resources("synthesize_prototype_shard"),
    params:
        device=config["device"],
        command=lambda w: prototype_command(w.proto),
        model=lambda w: model_spec(w.model),
        settings=lambda w: stage_settings(f"prototypes.methods.{w.proto}"),
    shell:
        "peekflow {params.command} --model {params.model:q} --checkpoint {input.checkpoint:q} --device {params.device}"
        " --settings {params.settings:q} --threads {threads} --shard {wildcards.shard}/{wildcards.shards}"
        " --out {output.prototypes} > {log} 2>&1"


rule merge_prototype_shards:
    input:
        shards=lambda w: shard_files(f"results/prototypes/{w.model}/{w.proto}", shards("prototypes", w.proto)),
    output:
        prototypes=prototype_file("{model}", "{proto}"),
        grid=report(
            "results/prototypes/{model}/{proto}.png",
            caption="../report/prototypes.rst",
            category="2. Prototypes",
            subcategory="{model}",
            labels={"method": "{proto}"},
        ),
    log:
        "logs/prototypes/{model}/{proto}.log",
    benchmark:
        "results/benchmarks/merge_prototype_shards/{model}/{proto}.tsv"
    wildcard_constraints:
        proto=sharded_pattern("prototypes", model_made_prototypes(), sharded=True),
    resources:
        **job_resources("merge_prototype_shards"),
    shell:
        "peekflow merge-prototypes --shards {input.shards} --out {output.prototypes} --grid {output.grid}"
        " > {log} 2>&1"


rule synthesize_caricatures:
    input:
        checkpoint=lambda w: model_checkpoint(w.model),
        images=lambda w: dataset_input(caricature_dataset()),
    output:
        prototypes=prototype_file("{model}", "{proto}"),
        grid=report(
            "results/prototypes/{model}/{proto}.png",
            caption="../report/caricature.rst",
            category="2. Prototypes",
            subcategory="{model}",
            labels={"method": "caricature"},
        ),
    log:
        "logs/prototypes/{model}/{proto}.log",
    benchmark:
        "results/benchmarks/synthesize_caricatures/{model}/{proto}.tsv"
    wildcard_constraints:
        proto=sharded_pattern("prototypes", ["caricature"], sharded=False),
    threads: config["prototypes"]["threads"]
    resources:
        **job_resources("synthesize_caricatures"),
    params:
        device=config["device"],
        model=lambda w: model_spec(w.model),
        images=lambda w: dataset_images(caricature_dataset()),
        settings=lambda w: stage_settings("prototypes.methods.caricature"),
    shell:
        "peekflow caricature --model {params.model:q} --checkpoint {input.checkpoint:q} --images {params.images:q} --device {params.device}"
        " --settings {params.settings:q} --threads {threads}"
        " --out {output.prototypes} --grid {output.grid} > {log} 2>&1"


# prototypes.shards.caricature: as synthesize_prototype_shard, for the caricatures of the reference images.
rule synthesize_caricature_shard:
    input:
        checkpoint=lambda w: model_checkpoint(w.model),
        images=lambda w: dataset_input(caricature_dataset()),
    output:
        prototypes=temp("results/prototypes/{model}/caricature/shard_{shard}_of_{shards}.h5"),
    log:
        "logs/prototypes/{model}/caricature/shard_{shard}_of_{shards}.log",
    benchmark:
        "results/benchmarks/synthesize_caricature_shard/{model}/shard_{shard}_of_{shards}.tsv"
    wildcard_constraints:
        shard=r"\d+",
        shards=r"\d+",
    threads: config["prototypes"]["threads"]
    resources:
        **job_resources("synthesize_caricature_shard"),
    params:
        device=config["device"],
        model=lambda w: model_spec(w.model),
        images=lambda w: dataset_images(caricature_dataset()),
        settings=lambda w: stage_settings("prototypes.methods.caricature"),
    shell:
        "peekflow caricature --model {params.model:q} --checkpoint {input.checkpoint:q} --images {params.images:q} --device {params.device}"
        " --settings {params.settings:q} --threads {threads} --shard {wildcards.shard}/{wildcards.shards}"
        " --out {output.prototypes} > {log} 2>&1"


rule merge_caricature_shards:
    input:
        shards=lambda w: shard_files(f"results/prototypes/{w.model}/{w.proto}", shards("prototypes", w.proto)),
    output:
        prototypes=prototype_file("{model}", "{proto}"),
        grid=report(
            "results/prototypes/{model}/{proto}.png",
            caption="../report/caricature.rst",
            category="2. Prototypes",
            subcategory="{model}",
            labels={"method": "caricature"},
        ),
    log:
        "logs/prototypes/{model}/{proto}.log",
    benchmark:
        "results/benchmarks/merge_caricature_shards/{model}/{proto}.tsv"
    wildcard_constraints:
        proto=sharded_pattern("prototypes", ["caricature"], sharded=True),
    resources:
        **job_resources("merge_caricature_shards"),
    params:
        model=lambda w: model_spec(w.model),
    shell:
        "peekflow merge-prototypes --shards {input.shards} --model {params.model:q} --out {output.prototypes}"
        " --grid {output.grid} > {log} 2>&1"


rule evaluate_prototypes:
    input:
        prototypes=prototype_file("{model}", "{proto}"),
        checkpoint=lambda w: model_checkpoint(w.model),
        probe_checkpoint=lambda w: model_checkpoint(config["probe_model"]),
    output:
        quality="results/prototypes/{model}/{proto}_quality.json",
    log:
        "logs/prototypes/{model}/{proto}_quality.log",
    benchmark:
        "results/benchmarks/evaluate_prototypes/{model}/{proto}.tsv"
    threads: config["prototypes"]["threads"]
    resources:
        **job_resources("evaluate_prototypes"),
    params:
        model=lambda w: model_spec(w.model),
        probe_model=lambda w: model_spec(config["probe_model"]),
        device=config["device"],
    shell:
        "peekflow quality --prototypes {input.prototypes} --model {params.model:q} --checkpoint {input.checkpoint:q}"
        " --probe-model {params.probe_model:q} --probe-checkpoint {input.probe_checkpoint:q}"
        " --device {params.device} --threads {threads} --out {output.quality} > {log} 2>&1"
