"""peekflow's one image-synthesis engine: every image-optimisation method (DeepDream and DeepInversion prototypes,
feature visualisation, caricatures, DORA's s-AMS) is an objective rendered by the same loop.

- objective.py       `Objective`: per-image loss [B] to MINIMISE, composable (a + 0.5 * b, -a), and the
                     `Activations` it reads (layer outputs and logits of one or several models)
- objectives.py      class logit, channel mean, single unit, layer activation, caricature, any callable
- regularisers.py    total variation (L1/L2), L1-edge, L2 pixel: objectives on the image itself
- bn_stats.py        DeepInversion's batch-norm statistics loss over every BatchNorm layer
- param.py           parameterisations: raw pixels; Fourier spectrum with colour decorrelation and sigmoid
- transforms.py      per-step transforms (jitter/roll, flip, rotation, scale, pad/crop), built from each call's settings
- render.py          the loop: optimiser (Adam/AdamW, betas), schedule (constant, cosine with warm-up), gradient
                     clipping, the model's input normalisation always applied, seeded, batched over targets
"""
