"""Progress bars for long work (export, calibration, eval, bench) that follow the log level: shown when the
``glass_onnx`` loggers report INFO (the CLI's default), hidden under ``--quiet`` and where logging is not set up."""

from __future__ import annotations

import logging


def progress(iterable=None, **options):
    """``tqdm(iterable, **options)``, disabled unless glass-onnx logs at INFO."""
    from tqdm import tqdm

    return tqdm(iterable, disable=not logging.getLogger("glass_onnx").isEnabledFor(logging.INFO), **options)
