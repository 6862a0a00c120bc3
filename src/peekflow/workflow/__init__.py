"""The workflow layer: everything that reads the Snakemake config (a dict) or serves the workflow's tooling.

The config's checks (config_schema, config_checks, preflight), what `rule all` asks for (targets, replicas), the jobs'
resource requests (resources, resource_table, cost_model) and the README numbers (readme_numbers). Only this package
takes a config dict; the stage packages (data, models, features, prototypes, neurons, ood, ...) take settings objects,
arrays and paths, and never import it.
"""
