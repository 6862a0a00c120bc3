"""Where the no-image Gaussian (OOD method bn_gaussian) loses against real data: its parts swapped one at a time.

Runs on the embedded default's outputs (run the workflow first: the target, its feature stores and prototype
features). Rows, each a diagonal Mahalanobis (score = -min_k sum_c (z_c - mu_kc)^2 / D_c) on the penultimate
features, scored on the ID test set against each OOD set:
- derived: class means and covariance from batch-norm statistics and the last layer (bn_gaussian itself);
- real means + derived D / derived means + real D: one part from the ID training store (its class means, its mean
  within-class variance), the other derived;
- prototype offsets: the class means' offsets from the DeepInversion / DeepDream prototypes' features (data-free),
  centred on the derived mean, with the derived D;
- real: both from the ID training store (the diagonal Mahalanobis on real data, the ceiling of this family).
Also the correlation of the derived mean with the training mean and of the derived class-mean offsets with the real
ones. Nothing is tuned on the OOD sets.
Run: python benchmarks/datafree_gaussian.py [--model shapes_resnet] [--write-readme]
"""

from __future__ import annotations

import argparse, json, sys
from pathlib import Path

import h5py
import numpy as np
import yaml
from sklearn.metrics import roc_auc_score

from peekflow.models.spec import ModelSpec, load_spec
from peekflow.ood.bn_gaussian import lda_gaussians, penultimate_moments

sys.path.insert(0, str(Path(__file__).parent))
from readme_section import command_line, write_section

SECTION = "datafree_gaussian"


def store(path, layer):
    with h5py.File(path, "r") as h5:
        return h5[f"features/{layer}"][:].astype(np.float64), h5["labels"][:], h5["last_layer/weight"][:]


def diag_score(z, means, var):
    inv = 1.0 / var
    return -((z ** 2) @ inv[:, None] - 2 * z @ (means * inv).T + ((means ** 2) @ inv)[None]).min(axis=1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="config/config.yaml")
    p.add_argument("--model", default=None, help="target model name (default: the config's target_model)")
    p.add_argument("--write-readme", action="store_true")
    args = p.parse_args()
    config = yaml.safe_load(open(args.config))
    name = args.model or config["target_model"]
    m = config["models"][config["target_model"]]
    layer, ood = m["penultimate"], config["ood"]
    spec = ModelSpec(name=name, arch=m["arch"], num_classes=m["num_classes"], preprocessing=m["preprocessing"],
                     arch_kwargs=m.get("arch_kwargs") or {})
    model, _ = load_spec(spec, f"results/models/{name}/model.pt")
    features = f"results/features/{name}"
    train, labels, weight = store(f"{features}/{ood['id_train']}.h5", layer)
    test = store(f"{features}/{ood['id_test']}.h5", layer)[0]
    oods = {o: store(f"{features}/{o}.h5", layer)[0] for o in ood["ood_sets"]}
    mean, var = penultimate_moments(model, layer)
    means, d = lda_gaussians(mean, var, weight)
    classes = np.unique(labels[labels >= 0])
    real_means = np.stack([train[labels == k].mean(0) for k in classes])
    real_d = np.mean([train[labels == k].var(0) for k in classes], axis=0)
    routes = {"derived (bn_gaussian)": (means, d), "real means + derived D": (real_means, d),
              "derived means + real D": (means, real_d), "real (diagonal Mahalanobis)": (real_means, real_d)}
    for bank in ("deepinversion", "deepdream"):
        path = Path(f"{features}/prototypes_{bank}.h5")
        if path.exists():
            pf, py, _ = store(path, layer)
            pm = np.stack([pf[py == k].mean(0) for k in classes])
            routes[f"{bank} prototype offsets + derived mean, D ({len(pf)} prototypes)"] = (mean + pm - pm.mean(0), d)
    rows = []
    for route, (mu, cov) in routes.items():
        s_id = diag_score(test, mu, cov)
        aurocs = {o: 100 * roc_auc_score(np.r_[np.ones(len(s_id)), np.zeros(len(x))],
                                         np.r_[s_id, diag_score(x, mu, cov)]) for o, x in oods.items()}
        rows.append(f"| {route} | " + " | ".join(f"{a:.1f}" for a in aurocs.values())
                    + f" | {np.mean(list(aurocs.values())):.1f} |")
        print(route, json.dumps({k: round(v, 1) for k, v in aurocs.items()}))
    offsets = np.corrcoef((means - means.mean(0)).ravel(), (real_means - real_means.mean(0)).ravel())[0, 1]
    section = "\n".join([
        "## The no-image Gaussian, part by part (`datafree_gaussian.py`)", "",
        "Baseline: the same diagonal Gaussian fitted on the ID training store (the real row).", "",
        "| route | " + " | ".join(f"{o} AUROC" for o in oods) + " | average |",
        "|---|" + "---:|" * (len(oods) + 1), *rows, "",
        f"Derived mean vs the ID training mean: correlation {np.corrcoef(mean, train.mean(0))[0, 1]:.3f}; derived "
        f"class-mean offsets vs the real ones: {offsets:.3f}; derived D vs the real within-class variance: "
        f"{np.corrcoef(d, real_d)[0, 1]:.3f}.", "",
        f"Setup: the embedded default's target {name} ({args.config}), penultimate {layer}, ID test {ood['id_test']}; "
        "one trained model (floats and hence models differ between processors and seeds).", "",
        command_line(),
    ])
    print(section)
    if args.write_readme:
        write_section(SECTION, section)


if __name__ == "__main__":
    main()
