"""Nodes of the iris example: split the data, predict with 1-nearest-neighbour,
report the accuracy."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd


def split_data(
    data: pd.DataFrame, parameters: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    """Split the data into training and test sets of features and target.

    Args:
        data: Features and target, one row per flower.
        parameters: ``train_fraction``, ``random_state`` and ``target_column``
            from ``parameters.yml``.

    Returns:
        ``X_train``, ``X_test`` (DataFrames) and ``y_train``, ``y_test`` (Series).
    """
    data_train = data.sample(
        frac=parameters["train_fraction"], random_state=parameters["random_state"]
    )
    data_test = data.drop(data_train.index)

    X_train = data_train.drop(columns=parameters["target_column"])
    X_test = data_test.drop(columns=parameters["target_column"])
    y_train = data_train[parameters["target_column"]]
    y_test = data_test[parameters["target_column"]]

    return X_train, X_test, y_train, y_test


def make_predictions(
    X_train: pd.DataFrame, X_test: pd.DataFrame, y_train: pd.Series
) -> pd.Series:
    """Predict the target of the test set with a 1-nearest-neighbour classifier.

    Args:
        X_train: Training features.
        X_test: Test features.
        y_train: Training target.

    Returns:
        The predicted target, indexed like ``X_test``.
    """
    X_train_numpy = X_train.to_numpy()
    X_test_numpy = X_test.to_numpy()

    squared_distances = np.sum(
        (X_train_numpy[:, None, :] - X_test_numpy[None, :, :]) ** 2, axis=-1
    )
    nearest_neighbour = squared_distances.argmin(axis=0)
    y_pred = y_train.iloc[nearest_neighbour]
    y_pred.index = X_test.index

    return y_pred


def report_accuracy(y_pred: pd.Series, y_test: pd.Series) -> None:
    """Compute the accuracy of the predictions and log it.

    Args:
        y_pred: Predicted target.
        y_test: True target.
    """
    accuracy = (y_pred == y_test).sum() / len(y_test)
    logger = logging.getLogger(__name__)
    logger.info("Model has accuracy of %.3f on test data.", accuracy)
