"""DORA's result files of a layer: the outlier table (CSV: one row per neuron, most outlying first), its figure and,
for a one-job run or a merge of shards, the layer's signal file with every neuron's s-AMS (the neuron atlas reads
it)."""

from __future__ import annotations

import logging

from peekflow.io import atomic_path
from peekflow.neurons.dora import DoraResult, DoraSignals, dora_table
from peekflow.neurons.dora_shards import FIELDS, write_signals
from peekflow.neurons.label_figures import plot_dora


def write_dora(out, figure, result: DoraResult, title: str, signals=None, settings: dict | None = None) -> None:
    """The CSV `out`, the figure (a path, or None) and the signal file (`signals`: a path, or None)."""
    if signals:
        write_signals(signals, DoraSignals(**{name: getattr(result, name) for name in FIELDS}), settings or {})
    table = dora_table(result)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    if figure:
        plot_dora(figure, result, title=title)
    flagged = table.loc[table["outlier"], "neuron"].tolist()
    logging.getLogger("peekflow").info("wrote %s: %d neurons, %d LOF outliers %s; most outlying: %s", out,
                                       len(table), len(flagged), flagged[:10], table["neuron"].head(5).tolist())
