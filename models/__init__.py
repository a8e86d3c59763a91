"""The rnnlm core: text, networks, bundles, decoding, scoring, n-grams, forecasting.

Plain PyTorch and Python only; `training/` and `app/` both build on it.
"""
