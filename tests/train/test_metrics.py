"""``evaluate`` and ``confusion_matrix`` against plain torch and scikit-learn."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from torch import nn

from convolab.train.metrics import confusion_matrix, evaluate


@pytest.mark.parametrize("n,k,seed", [(500, 7, 0), (37, 3, 1), (1, 4, 2), (200, 10, 3)])
def test_confusion_matrix_matches_sklearn(n, k, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, k, (n,), generator=g)
    preds = torch.where(torch.rand(n, generator=g) < 0.6, labels, torch.randint(0, k, (n,), generator=g))
    cm = confusion_matrix(labels, preds, k)
    expected = sk_confusion_matrix(labels.numpy(), preds.numpy(), labels=list(range(k)))
    assert cm.shape == (k, k)
    assert cm.tolist() == expected.tolist()
    assert int(cm.sum()) == n


def test_confusion_matrix_rows_are_true_classes():
    labels = torch.tensor([0, 0, 0, 1, 2])
    preds = torch.tensor([0, 1, 1, 1, 0])
    cm = confusion_matrix(labels, preds, 4)  # class 3 never occurs: an all-zero row and column
    assert cm.tolist() == [[1, 2, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]


def test_evaluate_matches_plain_torch_and_restores_training_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.Dropout(0.5), nn.Linear(16, 3))
    x = torch.randn(103, 5)
    y = torch.randint(0, 3, (103,))
    batches = [(x[i:i + 10], y[i:i + 10]) for i in range(0, 103, 10)]
    model.train()
    res = evaluate(model, batches, keep_predictions=True)
    assert model.training, "evaluate must put the model back in training mode"
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert res.n == 103
    assert res.loss == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert res.accuracy == int((logits.argmax(1) == y).sum()) / 103
    assert torch.equal(res.predictions, logits.argmax(1))
    assert torch.equal(res.labels, y)
    torch.testing.assert_close(res.probabilities, logits.softmax(1))


def test_evaluate_of_nothing_is_nan():
    res = evaluate(nn.Linear(2, 2), [])
    assert res.n == 0 and res.loss != res.loss and res.accuracy != res.accuracy
