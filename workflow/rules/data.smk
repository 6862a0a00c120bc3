# Embedded data sets: rendered shapes (ID and near OOD), textures and noise, generated from the config's seed.


rule generate_dataset:
    output:
        attributes="resources/datasets/{generated}/attributes.csv",
    log:
        "logs/generate/{generated}.log",
    benchmark:
        "results/benchmarks/generate_dataset/{generated}.tsv"
    threads: 2  # worker processes; the images do not depend on their number
    resources:
        **job_resources("generate_dataset"),
    params:
        kind=lambda w: config["generate"]["sets"][w.generated]["kind"],
        settings=lambda w: generate_settings(w.generated),
        out=lambda w: f"resources/datasets/{w.generated}",
    shell:
        "peekflow generate --kind {params.kind} --settings {params.settings:q} --out {params.out}"
        " --workers {threads} > {log} 2>&1"
