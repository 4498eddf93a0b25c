"""The former name of :mod:`zoo.converters.modeldir`, kept while code merged from other branches still imports it
(``zoo/training/runner.py``); new code imports :mod:`zoo.converters.modeldir`. Remove once nothing imports it."""

from zoo.converters.modeldir import (
    CONFIG,
    CONVERTER_VERSION,
    RECEIPT,
    VOCAB,
    WEIGHTS,
    read_config,
    read_directory_vocab,
    read_receipt,
    staged_into,
    staged_output,
)

__all__ = ["CONFIG", "CONVERTER_VERSION", "RECEIPT", "VOCAB", "WEIGHTS", "read_config", "read_directory_vocab",
           "read_receipt", "staged_into", "staged_output"]
