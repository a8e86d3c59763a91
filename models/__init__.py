"""The rnnlm core: text, networks, bundles, decoding, scoring, n-grams, forecasting.

PyTorch, numpy and safetensors (and matplotlib for the training curves, `models.curves`);
no HTTP and no CLI;
`training/` and `app/` both build on it.
"""
