"""Model training, evaluation, the versioned registry and the batch scorer.

One responsibility per module, pure logic first:

- `models.metrics`: AUC ROC, Average Precision, Card Precision@k (pure functions).
- `models.protocol`: the handbook's train / delay / test splits and prequential folds.
- `models.evaluation`: the metrics of scores on a protocol period.
- `models.estimators`: the model kinds, their hyper-parameters, X and y from a frame.
- `models.selection`: hyper-parameters chosen on prequential validation folds.
- `models.threshold`: the alert threshold, chosen for a stated objective.
- `models.training`: the whole recipe (validate, fit, assess, threshold, fingerprint).
- `models.handbook`: the handbook's published results and the comparison table.
- `models.source`: a training dataset file (read by `features.dataset`) and its hash.
- `models.registry`: versioned skops artifacts, verified on load; promotion.
- `models.scoring`: the batch scorer the stream workers use.
- `models.explain`: alert reasons, by occlusion against the training medians.
"""
