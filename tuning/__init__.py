"""keras-tuner search over tfdense DenseNet configs: `python -m tuning.search` (see its --help).

`space` maps hyperparameters to a `RunConfig` and checks budgets, `tuner` trains candidates with
`tfdense.fitting`, `results` writes the committed trials, summary, plot and chosen config.
"""
