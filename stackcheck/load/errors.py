"""Load-testing errors: each says what went wrong and what to do about it."""

from __future__ import annotations

from stackcheck.errors import StackcheckError


class LoadError(StackcheckError):
    """A load run could not be planned, started or finished."""


class ReportSchemaError(LoadError):
    """A load report does not match the schema version it claims."""


class HistoryError(LoadError):
    """The run history could not be read or written."""
