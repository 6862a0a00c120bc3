"""Neuron analysis: top-N images and patches per channel, DORA outlier neurons, INVERT concept labels."""
