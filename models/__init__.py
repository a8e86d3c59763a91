"""The rnnlm core: text, networks, bundles, decoding, scoring, n-grams, forecasting.

Plain PyTorch and Python only (and matplotlib for the training curves, `models.curves`);
`training/` and `app/` both build on it.
"""
